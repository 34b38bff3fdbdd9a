// FeatureStore: the HDF5 file schema of docs/reference-store.md, and nothing above it.
//
// A store holds, for N samples, five datasets that grow together (row i of each describes
// sample i): image_features (N,D) half, image_token_features (N,T_img,D) half, ids (N,)
// int64, labels (N,) int64, split (N,) vlen UTF-8. Text features live in
// templates/<id>/{text_features, text_token_features, texts}. D and T_img are read from the
// file, never assumed.
//
// Crash safety: a store opened for writing is written through a rollback journal
// (journal.hpp). `append_batch` and `write_template` are atomic: after a crash at any moment
// (SIGKILL included) the next open restores the store to its last commit. The rows on disk
// are the truth; `split_counts` is kept in step with them at every commit.
//
// Concurrency: one writer XOR any number of readers (HDF5 file locks). Opening a store that
// another process writes throws LockedError. One FeatureStore object is not thread-safe:
// call it from one thread at a time (HDF5 serializes calls process-wide anyway).
//
// Compatibility: files are exactly what the reference (h5py) writes: chunks (64,D),
// (4,T_img,D), (4096,), lzf (lzf_filter.hpp) on every dataset, template datasets chunked
// like h5py's guess_chunk, string attributes as vlen UTF-8, JSON attributes formatted like
// Python's json.dumps (so `split_counts` reads `{"train": 11959, "val": 1712}`).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "fstore/store_writer.hpp"

namespace fstore {

// Shape parameters of a store's image datasets.
struct StoreLayout {
    std::int64_t dim = 1152;          // D: embedding width
    std::int64_t image_tokens = 729;  // T_img: patch tokens per image
};

// The five row-aligned datasets.
enum class Column { image_features, image_token_features, ids, labels, split };
const char* column_name(Column column);  // its dataset's name: "image_features", ...

enum class DType { f16, f32, i64 };
std::size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // numpy spelling: "float16", "float32", "int64"

// A dense C-order array read from a store. f16 elements are IEEE half bit patterns.
struct Array {
    DType dtype = DType::f32;
    std::vector<std::int64_t> shape;
    std::vector<std::uint8_t> bytes;

    std::int64_t elements() const;
    template <class T> const T* data() const { return reinterpret_cast<const T*>(bytes.data()); }
};

// One batch of rows to append. Pointers are borrowed for the duration of the call.
// ids are not given: the store assigns ids = row number (0, 1, 2, ... across splits).
struct RowBatch {
    std::int64_t rows = 0;
    const std::uint16_t* image_features = nullptr;        // rows × D, IEEE half bits
    const std::uint16_t* image_token_features = nullptr;  // rows × T_img × D, IEEE half bits
    const std::int64_t* labels = nullptr;                 // rows; -1 = missing
    const std::vector<std::string>* splits = nullptr;     // rows entries
};

// Text features of one template, as written to templates/<id>/.
struct TemplateRecord {
    std::vector<std::string> texts;                 // K prompts
    std::vector<float> text_features;               // K × D
    std::vector<float> text_token_features;         // K × T_txt × D, or empty (no tokens)
    std::int64_t text_tokens = -1;                  // T_txt, -1 when there are no tokens
};

// What templates/<id> holds: K, D and T_txt from its datasets' shapes (the attributes of
// those names only where a dataset is missing), texts_hash and created_at attributes.
struct TemplateInfo {
    std::string id;
    std::int64_t rows = 0;          // K
    std::int64_t dim = 0;           // D
    std::int64_t text_tokens = -1;  // T_txt, -1 without token features
    // text_token_features' own shape ((K, T_txt, D) when whole), empty without the dataset.
    std::vector<std::int64_t> token_shape;
    std::string texts_hash;         // hex SHA-256 over each text's UTF-8 bytes + one 0 byte
    std::string created_at;
    bool has_token_features = false;
    // texts (K,), text_features (K, D) and text_token_features (K, T_txt, D) all present,
    // with shapes that agree: the group as write_template leaves it.
    bool complete = false;
};

// What the repair (as the reference's) puts where a row's split or label is unknown.
inline constexpr const char* missing_split = "unspecified";
inline constexpr std::int64_t missing_label = -1;

// A root attribute's value as HDF5 holds it: int64 / float64 scalar or string.
using AttributeValue = std::variant<std::int64_t, double, std::string>;

// hex SHA-256 of texts, each followed by one zero byte (the reference's texts_hash).
std::string texts_hash(const std::vector<std::string>& texts);

class FeatureStore {
public:
    // templates_only: a writer of templates and attributes (clear-templates) that leaves the
    // row datasets exactly as found: no repair, no trim; append/truncate are refused.
    enum class Access { read_only, read_write, templates_only };

    // Opens an existing store. read_write: takes the writer lock, rolls back an unfinished
    // commit, repairs missing datasets/templates (as the reference does: ids = row number,
    // labels -1, split "unspecified"; a missing token dataset comes back empty) and trims the
    // trailing rows that are not complete (a row is complete when it lies within all five
    // datasets, ids[i] == i and split[i] is non-empty: fill values mark torn rows), then
    // rewrites split_counts if it disagrees with the data.
    // read_only never modifies the data: rows() counts the complete rows, missing ids/labels/
    // split read as the repair would fill them; templates_only reads rows the same way. A journal left by a killed writer is rolled
    // back first when the file is writable (the result is the last commit); otherwise the
    // open throws LockedError saying to open it for writing once.
    // Throws NotFoundError (missing path, directory), FormatError (not HDF5 / no
    // /image_features / inconsistent shapes), LockedError (another process holds the file).
    // `durable` (writers only): also fdatasync the journal before overwriting and the file at
    // each commit, so commits survive power loss and not only a killed process (slower).
    static FeatureStore open(const std::filesystem::path& path, Access access = Access::read_only,
                             bool durable = false);

    // Opens `path` for writing, creating it with the reference schema when it does not exist
    // (built under a temporary name and renamed, so a kill never leaves half a store).
    // Throws MismatchError when an existing store's D / T_img differ from `layout`.
    static FeatureStore open_or_create(const std::filesystem::path& path, StoreLayout layout = {},
                                       bool durable = false);

    FeatureStore(FeatureStore&&) noexcept;
    FeatureStore& operator=(FeatureStore&&) noexcept;
    ~FeatureStore();  // commits pending writes (read_write) and closes every handle

    const std::filesystem::path& path() const;
    bool writable() const;
    StoreLayout layout() const;
    std::int64_t rows() const;  // N

    // ---- rows -------------------------------------------------------------------------
    // Appends rows to all five datasets and commits them atomically; updates split_counts.
    // The feature columns go through a ChunkWriter (store_writer.hpp): chunks compressed on
    // a small thread pool, written whole, in order, by the calling thread, before the commit.
    // Any batch size works (partial chunks are merged); multiples of 4 rows (64 for
    // image_features) starting at such a row avoid rewriting chunks.
    void append_batch(const RowBatch& batch);

    // Tunes the chunk writer used by later appends (threads, incompressible detection).
    void set_writer_options(const ChunkWriterOptions& options);
    // Counters of that writer since it was made (zeros before the first append).
    ChunkWriterStats writer_stats() const;

    // Rows of one column at the given (any order, repeats allowed) row indices; reads only
    // the chunks that hold them. Shape: [rows.size(), ...the column's per-row shape].
    // Throws UsageError naming the valid range for an out-of-range index. Column::split is
    // not an Array: use read_splits. Runs of contiguous indices are read as one hyperslab;
    // each column's chunk cache holds two chunks, so scattered rows decompress a chunk once.
    Array read_rows(Column column, const std::vector<std::int64_t>& rows) const;
    // The dtype read_rows returns for `column`: i64 for ids and labels; for the features
    // f16 when the file holds IEEE half floats (as the format says), else f32, so that a
    // store written with float32 (or a 16-bit float of another layout, e.g. bfloat16) is
    // read without losing precision instead of rounded to half. UsageError for split.
    DType column_dtype(Column column) const;
    // Throws FormatError naming the fix when the file lacks the dataset of `column` and a
    // read cannot stand in for it (ids, labels and split can: see open). Only read-only
    // opens meet this; writable ones repair the column or refuse to open.
    void require_column(Column column) const;
    std::vector<std::string> read_splits(const std::vector<std::int64_t>& rows) const;
    std::vector<std::string> read_all_splits() const;

    // Keeps the first `rows` rows of all five datasets (used by --no-resume and repair).
    void truncate_rows(std::int64_t rows);

    // Rows per split name as counted in the `split` dataset, and as the attribute says.
    std::map<std::string, std::int64_t> split_counts_from_data() const;
    std::map<std::string, std::int64_t> split_counts() const;

    // ---- templates --------------------------------------------------------------------
    std::vector<std::string> template_ids() const;  // sorted
    bool has_template(const std::string& id) const;
    TemplateInfo template_info(const std::string& id) const;  // UsageError if unknown
    std::vector<std::string> template_texts(const std::string& id) const;
    Array read_template(const std::string& id, bool token_features) const;  // f32
    void write_template(const std::string& id, const TemplateRecord& record);  // replaces whole
    void clear_templates();  // deletes every group, recreates an empty templates/
    void remove_templates(const std::vector<std::string>& ids);  // those groups, one commit

    // ---- root attributes --------------------------------------------------------------
    std::map<std::string, AttributeValue> attributes() const;  // the scalar ones
    // Every root attribute as h5py reads it (arrays, booleans, uint64), for display.
    std::map<std::string, nlohmann::json> attributes_json() const;
    std::optional<AttributeValue> attribute(const std::string& name) const;
    // Replaces any attribute of that name; committed by the next commit (or destruction).
    // `split_counts` is refused (UsageError): the store keeps it in step with the rows.
    void set_attribute(const std::string& name, const AttributeValue& value);
    // Attributes that are strings holding JSON (split_counts, label_texts, dataset, ...).
    std::optional<nlohmann::json> json_attribute(const std::string& name) const;
    void set_json_attribute(const std::string& name, const nlohmann::json& value);

    // Flushes and commits everything written so far (append_batch/write_template already do).
    void commit();

    class Impl;

private:
    explicit FeatureStore(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace fstore
