// Query: everything `fstore-access` does, as functions that return values.
//
// The reference reader (database_access_main, docs/reference-store.md "Reader behaviour")
// offers summarize, templates, sample, batch, fetch and clear-templates; fstore adds
// verify. Each is a function here returning a struct or nlohmann::json; printing, option
// parsing and exit codes live in apps/fstore_access_main.cpp.
//
// Contracts:
// - Reads only what is asked: shapes come from the store's metadata; feature rows are read
//   only when the caller wants the values (JSON data or an --out file), through
//   FeatureStore::read_rows, which reads just the chunks that hold them. `sample` reads one
//   row, never the whole token dataset; large `batch` outputs stream block by block.
// - Bad input throws the classes of error.hpp with one-line messages: NotFoundError (no such
//   file, a directory), FormatError (not HDF5 / not a store), LockedError (a writer holds
//   it), UsageError (index out of range naming the valid range, unknown split / feature /
//   template, --concept with --label). Nothing here writes to the store except
//   clear_templates.
// - Indices follow numpy: negative indices count from the end; slices START:END[:STEP] clamp
//   to the length, allow negative steps and omitted parts (":10", "-5:", "::2", "::-1").
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "fstore/feature_store.hpp"

namespace fstore {

// ---- numbers typed on the command line ----------------------------------------------------
//
// Every number fstore-access takes is parsed here, so all say the same things: "bad <option>
// value 'x': ...", "<option> needs values (got option '--json')" when the parser took the
// next option as its value, and an out-of-range index quotes what was typed.

// One index as typed. `value` saturates at the int64 limits: no store has that many rows,
// so such an index is out of range, and the message quotes `text`, not the limit.
struct TypedIndex {
    std::int64_t value = 0;
    std::string text;
};

// Parses one index ("3", "-1", "99999999999999999999"); `option` names it in messages
// ("index", "--idx"). Throws UsageError for anything but a whole decimal number.
TypedIndex parse_index(const std::string& text, const std::string& option);

// Parses a count ("3"); values past the int64 range saturate. Throws UsageError "<option>
// must be 0 or more" for a negative count, and for anything but a whole decimal number.
std::int64_t parse_count(const std::string& text, const std::string& option);

// ---- index selections (numpy semantics) -------------------------------------------------

struct Slice {
    std::optional<std::int64_t> start, stop, step;  // omitted parts stay empty
};

// What `--idx` asked for: every row (no --idx), a list of indices, or one slice.
struct IndexSelection {
    enum class Kind { all, list, slice };
    Kind kind = Kind::all;
    std::vector<TypedIndex> indices;    // kind == list, as given (may be negative)
    Slice slice;                        // kind == slice
};

// Parses `--idx` values: integers ("3", "-1") or exactly one slice ("2:10", ":10", "-5:",
// "::2", "10:2:-2"; parts past the int64 range saturate, which numpy's clamping makes
// harmless). Empty args = all. Throws UsageError for anything else, a zero step, a slice
// mixed with other values, or an option taken as a value ("--idx --json").
IndexSelection parse_index_selection(const std::vector<std::string>& args);

// Maps one possibly negative index into 0..length-1. Throws UsageError quoting the index as
// typed and naming the valid range ("index 12 is out of range for split 'train' (10 rows):
// use -10..9").
std::int64_t normalize_index(const TypedIndex& index, std::int64_t length, const std::string& what);
std::int64_t normalize_index(std::int64_t index, std::int64_t length, const std::string& what);

// Positions (0..length-1) a selection picks from a sequence of `length`, like numpy's
// `a[sel]`: out-of-range list entries throw; slices clamp and may be empty.
std::vector<std::int64_t> resolve_selection(const IndexSelection& selection, std::int64_t length,
                                            const std::string& what);

// ---- summarize --------------------------------------------------------------------------

// One node of the file tree drawing: a group (with children), a dataset, a named
// datatype, or a link that is not followed (soft or external, as h5py's visit skips them,
// or an object that cannot be opened).
struct TreeNode {
    enum class Kind { group, dataset, datatype, link };
    std::string name;  // "/" for the root, else the link name
    Kind kind = Kind::group;
    std::vector<std::int64_t> shape;  // datasets
    std::string dtype;                // datasets: numpy-like ("float16", "int64", "str", ...)
    std::string link;                 // links: "soft link to /x", "external link to f.h5:/x", ...
    std::vector<std::string> attributes;  // attribute names, sorted
    std::vector<TreeNode> children;       // groups, in name order (as h5py lists them)
    // A group met again through another hard link (links can form cycles): the path where
    // the tree shows it; its children are not repeated.
    std::string same_as;
};

struct Summary {
    std::vector<std::int64_t> image_features_shape;  // (N, D)
    std::string image_features_dtype = "float16";  // as stored ("float32", "bfloat16", ...)
    std::int64_t rows = 0;
    std::int64_t dim = 0;
    std::int64_t image_tokens = 0;
    std::vector<std::int64_t> first_ids;                // up to 5
    // From the split_counts attribute, in store order: the order in which splits first
    // appear in /split (train, val, test for a normal store); names only the attribute
    // holds follow in the attribute's order.
    std::vector<std::pair<std::string, std::int64_t>> split_counts;
    std::vector<std::string> templates;  // first max_templates, sorted
    std::int64_t template_count = 0;
    std::map<std::string, nlohmann::json> attributes;  // root attributes, as h5py reads them
    TreeNode tree;
};

Summary summarize(const std::filesystem::path& path, std::int64_t max_templates = 3);
// rows, split_counts, D, T_img, templates, ...: an ordered_json, so that split_counts keeps
// store order and the keys read in this order.
nlohmann::ordered_json to_json(const Summary& summary);

// Draws `tree` with ├── └── │ connectors, one line per group/dataset:
// "├── image_features  (12, 8) float16" and "[attrs: D, T_img, ...]" for attributes.
std::string render_tree(const TreeNode& tree);

// A shape as numpy prints it: (3, 4), (5,), ().
std::string shape_text(const std::vector<std::int64_t>& shape);

// Reads the HDF5 structure of `path` (names, shapes, types, attribute names; no data).
TreeNode describe_file(const std::filesystem::path& path);

// ---- templates --------------------------------------------------------------------------

std::vector<std::string> list_templates(const FeatureStore& store);  // sorted

// ---- sample -----------------------------------------------------------------------------

struct SampleResult {
    std::int64_t index = 0;  // normalized (non-negative) row
    std::int64_t id = 0;
    std::int64_t label = 0;
    std::string split;
    std::vector<std::int64_t> image_feature_shape;        // (D)
    std::vector<std::int64_t> image_token_feature_shape;  // (T_img, D)
    std::optional<Array> image_feature;                   // with_data only, shape (D)
    std::optional<Array> image_token_feature;             // with_data only, shape (T_img, D)
};

// Row `index` (negative counts from the end) of the whole store. Feature rows are read only
// when `with_data`.
SampleResult sample(const FeatureStore& store, const TypedIndex& index, bool with_data);
SampleResult sample(const FeatureStore& store, std::int64_t index, bool with_data);
nlohmann::json to_json(const SampleResult& result);  // index, id, label, split, *_shape

// ---- batch ------------------------------------------------------------------------------

enum class Feature { image, patches, label };
Feature parse_feature(const std::string& name);  // "image" | "patches" | "label"
const char* feature_name(Feature feature);

struct BatchRequest {
    std::string split = "all";  // "all" or a split name (train, val, test, or one in the store)
    Feature feature = Feature::image;
    IndexSelection selection;  // relative to the split's rows
};

// Which store rows a batch reads, and the array it produces.
struct BatchPlan {
    Column column = Column::image_features;
    DType dtype = DType::f16;
    std::vector<std::int64_t> rows;   // store rows, in output order
    std::vector<std::int64_t> shape;  // (rows.size(), per-row shape...)
};

// Resolves split and indices against the store. Throws UsageError for an unknown split or
// an out-of-range index.
BatchPlan plan_batch(const FeatureStore& store, const BatchRequest& request);
Array read_batch(const FeatureStore& store, const BatchPlan& plan);
// Streams the rows into a .npy file, a block of rows at a time.
void write_batch_npy(const FeatureStore& store, const BatchPlan& plan, const std::filesystem::path& out);
// One line of JSON {"data", "dtype", "shape"}: data as nested lists; half values are
// printed exactly (the shortest decimal that reads back as the same double, e.g.
// 0.0999755859375). NaN and ±infinity print as Python's json.dumps writes them (NaN,
// Infinity, -Infinity): json.loads reads them back; strict parsers refuse them, as they
// refuse Python's own output.
std::string batch_json_line(const Array& array);

// Nested JSON lists of an array's values (f16 converted exactly to double); a non-finite
// value is json_number's marker (fstore/cli.hpp), which json_line prints bare.
nlohmann::json array_values_json(const Array& array);

// ---- fetch ------------------------------------------------------------------------------

struct FetchRequest {
    std::vector<std::string> template_ids;   // empty: every template
    bool concept_only = false;               // ids starting with "concept"
    bool label_only = false;                 // ids starting with "label"; exclusive with concept_only
    std::vector<std::string> concept_list;   // keep these concepts' rows, in this order
    bool token_features = false;             // text_token_features instead of text_features
};

struct FetchedTemplate {
    std::string id;
    std::vector<std::int64_t> shape;
    std::optional<Array> values;  // with_data only (float32)
};

struct FetchResult {
    std::vector<FetchedTemplate> templates;     // sorted by id
    std::vector<std::string> unknown_concepts;  // --concept-list names not in concept_texts
};

// Text features of the matching templates. --concept-list applies to concept templates
// (ids starting with "concept"), whose rows follow the stored `concept_texts` order; label
// templates are returned whole. Throws UsageError for an unknown template id, for
// concept_only with label_only, for concept_list with label_only or with a selection that
// holds no concept template, when no listed concept is known, when no template matches,
// for token features of a template stored without them, and for an option taken as a
// value ("--template --json").
FetchResult fetch(const FeatureStore& store, const FetchRequest& request, bool with_data);
nlohmann::json to_json(const FetchResult& result);  // {"templates": {ID: {"shape": [...]}}}

// ---- clear-templates ----------------------------------------------------------------------

// Deletes every template group (recreating an empty templates/); image datasets are never
// touched. Returns the ids that were removed.
std::vector<std::string> clear_templates(const std::filesystem::path& path);

// ---- verify -----------------------------------------------------------------------------

struct VerifyReport {
    std::int64_t rows = 0;
    std::vector<std::string> checks;    // what was checked, one line each
    std::vector<std::string> findings;  // problems, one line each
    bool ok() const { return findings.empty(); }
};

// Checks a store's integrity: the five datasets have equal lengths; ids are 0..N-1; the
// split_counts attribute equals the counts in `split`; each template's K, D, T_txt
// attributes match its datasets and texts_hash matches its texts. `read_data`: also reads
// every feature and label row and every template's features, so that a chunk that no
// longer decompresses (or that the disk fails to read) is found: that reads the whole file.
// Problems are findings, not exceptions; only inputs that are no store at all (missing,
// not HDF5, no /image_features) or locked throw.
VerifyReport verify(const std::filesystem::path& path, bool read_data = false);
nlohmann::json to_json(const VerifyReport& report);  // {"ok", "findings", "rows", "checks"}

}  // namespace fstore
