#include "fstore/query.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <numeric>
#include <set>
#include <system_error>

#include "fstore/cli.hpp"
#include "fstore/error.hpp"
#include "fstore/half.hpp"
#include "fstore/npy.hpp"
#include "fstore/prompts.hpp"
#include "h5_raw.hpp"  // also brings <hdf5.h>

namespace fstore {
namespace {

constexpr const char* kStandardSplits[] = {"train", "val", "test"};

std::string join(const std::vector<std::string>& items, const std::string& separator = ", ") {
    std::string out;
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += separator;
        out += items[i];
    }
    return out;
}

bool starts_with(const std::string& text, const std::string& prefix) {
    return text.compare(0, prefix.size(), prefix) == 0;
}

// The texts each template of the store's prompt set holds, by id, expanded from the four
// prompt attributes as the reference expanded them. A stored template whose texts differ,
// or whose id is not among these, was left by an earlier prompt set: the reference
// rewrites only the ids of the new set and keeps the rest.
struct StoredPromptTexts {
    // Empty when the store lacks an attribute (a text stage that never ran, another
    // tool's store) or when they do not parse; then `problem` says which.
    std::optional<std::map<std::string, std::vector<std::string>>> texts;
    std::string problem;  // set when the attributes are there but unreadable
};

StoredPromptTexts prompt_set_texts(const FeatureStore& store) {
    const char* names[] = {"label_texts", "prompt_temp_for_labels", "concept_texts", "prompt_temp_for_concepts"};
    std::string values[4];
    for (std::size_t i = 0; i < 4; ++i) {
        const auto value = store.attribute(names[i]);
        if (!value) return {};
        if (!std::holds_alternative<std::string>(*value)) {
            return {std::nullopt, std::string("root attribute ") + names[i] + " is not a string"};
        }
        values[i] = std::get<std::string>(*value);
    }
    try {
        const auto prompts = prompt_set_from_attributes(values[0], values[1], values[2], values[3], store.path().string());
        std::map<std::string, std::vector<std::string>> texts;
        for (auto& t : expand_stored_templates(prompts)) texts[t.id] = std::move(t.texts);
        return {std::move(texts), {}};
    } catch (const Error& e) {
        return {std::nullopt, e.what()};
    }
}

constexpr const char* kRebuildTemplates =
    "`fstore build --run-text --no-resume` (with --prompts FILE for a prompt set other than BloodMNIST's) "
    "rebuilds the templates";

// A whole decimal number ("3", "-12"). Values past the int64 range saturate at its limits
// (strtoll's ERANGE result), so callers can still say "out of range". Leading spaces and
// '+', which strtoll would accept, are refused: indices do not need them.
std::optional<std::int64_t> parse_integer(const std::string& text) {
    // A sign, as Python's int() and the other tool's options take it: -1, +1.
    const std::size_t first_digit = !text.empty() && (text[0] == '-' || text[0] == '+') ? 1 : 0;
    if (text.size() == first_digit || text.find_first_not_of("0123456789", first_digit) != std::string::npos) {
        return std::nullopt;
    }
    return static_cast<std::int64_t>(std::strtoll(text.c_str(), nullptr, 10));
}

// CLI11 gives an option that needs values the next argument even when that is another
// option ("--idx --json"); say so instead of calling "--json" a bad index.
void reject_option_as_value(const std::string& option, const std::string& value, const char* needs = "values") {
    if (starts_with(value, "--")) throw UsageError(option + " needs " + needs + " (got option '" + value + "')");
}

// One whole number given to `option`; `needs` and `usage` complete the messages.
TypedIndex parse_option_number(const std::string& text, const std::string& option, const char* needs,
                               const std::string& usage) {
    reject_option_as_value(option, text, needs);
    const auto value = parse_integer(text);
    if (!value) throw UsageError("bad " + option + " value '" + text + "': " + usage);
    return {*value, text};
}

// Per-row shape of a column.
std::vector<std::int64_t> row_shape(Column column, const StoreLayout& layout) {
    switch (column) {
        case Column::image_features: return {layout.dim};
        case Column::image_token_features: return {layout.image_tokens, layout.dim};
        default: return {};
    }
}

// Drops the leading length-1 axis of a one-row read.
Array squeeze_first(Array array) {
    if (!array.shape.empty()) array.shape.erase(array.shape.begin());
    return array;
}

void values_json(const Array& array, std::size_t axis, std::int64_t& offset, nlohmann::json& out) {
    out = nlohmann::json::array();
    const std::int64_t extent = array.shape[axis];
    if (axis + 1 == array.shape.size()) {
        auto& list = out.get_ref<nlohmann::json::array_t&>();
        list.reserve(static_cast<std::size_t>(extent));
        for (std::int64_t i = 0; i < extent; ++i, ++offset) {
            double value = 0;
            switch (array.dtype) {
                case DType::f16: value = static_cast<double>(half_to_float(array.data<std::uint16_t>()[offset])); break;
                case DType::f32: value = static_cast<double>(array.data<float>()[offset]); break;
                case DType::i64: list.emplace_back(array.data<std::int64_t>()[offset]); continue;
            }
            list.emplace_back(json_number(value));
        }
        return;
    }
    for (std::int64_t i = 0; i < extent; ++i) {
        nlohmann::json child;
        values_json(array, axis + 1, offset, child);
        out.push_back(std::move(child));
    }
}

void render_node(const TreeNode& node, const std::string& prefix, bool last, std::string& out) {
    out += prefix;
    out += last ? "└── " : "├── ";
    out += node.name;
    switch (node.kind) {
        case TreeNode::Kind::dataset: out += "  " + shape_text(node.shape) + " " + node.dtype; break;
        case TreeNode::Kind::datatype: out += "  (named datatype)"; break;
        case TreeNode::Kind::link: out += "  -> " + node.link; break;
        case TreeNode::Kind::group:
            out += "/";
            if (!node.same_as.empty()) out += "  (hard link to " + node.same_as + ")";
            break;
    }
    if (!node.attributes.empty()) out += "  [attrs: " + join(node.attributes) + "]";
    out += "\n";
    const std::string child_prefix = prefix + (last ? "    " : "│   ");
    for (std::size_t i = 0; i < node.children.size(); ++i) {
        render_node(node.children[i], child_prefix, i + 1 == node.children.size(), out);
    }
}

nlohmann::json tree_json(const TreeNode& node) {
    nlohmann::json out = {{"name", node.name}, {"attributes", node.attributes}};
    switch (node.kind) {
        case TreeNode::Kind::dataset:
            out["kind"] = "dataset";
            out["shape"] = node.shape;
            out["dtype"] = node.dtype;
            break;
        case TreeNode::Kind::datatype: out["kind"] = "datatype"; break;
        case TreeNode::Kind::link:
            out["kind"] = "link";
            out["link"] = node.link;
            break;
        case TreeNode::Kind::group: {
            out["kind"] = "group";
            if (!node.same_as.empty()) out["same_as"] = node.same_as;
            auto children = nlohmann::json::array();
            for (const auto& child : node.children) children.push_back(tree_json(child));
            out["children"] = std::move(children);
            break;
        }
    }
    return out;
}

// The split_counts attribute in store order: splits in the order they first appear in
// /split, then names only the attribute holds (in the attribute's own order).
std::vector<std::pair<std::string, std::int64_t>> split_counts_in_store_order(const FeatureStore& store) {
    auto counts = store.split_counts();
    std::vector<std::pair<std::string, std::int64_t>> ordered;
    ordered.reserve(counts.size());
    const auto take = [&](const std::string& name) {
        const auto it = counts.find(name);
        if (it == counts.end()) return;
        ordered.emplace_back(*it);
        counts.erase(it);
    };
    for (const auto& name : store.read_all_splits()) {
        if (counts.empty()) break;
        take(name);
    }
    if (!counts.empty()) {  // e.g. /split lost: the attribute's order (json.dumps keeps dict order)
        const auto text = store.attribute("split_counts");
        if (text && std::holds_alternative<std::string>(*text)) {
            const auto json = nlohmann::ordered_json::parse(std::get<std::string>(*text), nullptr, false);
            if (json.is_object())
                for (const auto& item : json.items()) take(item.key());
        }
    }
    ordered.insert(ordered.end(), counts.begin(), counts.end());
    return ordered;
}

std::vector<std::int64_t> iota_rows(std::int64_t count) {
    std::vector<std::int64_t> rows(static_cast<std::size_t>(count));
    for (std::int64_t i = 0; i < count; ++i) rows[static_cast<std::size_t>(i)] = i;
    return rows;
}

}  // namespace

std::string shape_text(const std::vector<std::int64_t>& shape) {
    std::string out = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (i) out += ", ";
        out += std::to_string(shape[i]);
    }
    if (shape.size() == 1) out += ",";
    return out + ")";
}

// ---- numbers typed on the command line ----------------------------------------------------

TypedIndex parse_index(const std::string& text, const std::string& option) {
    return parse_option_number(text, option, "a value", "use a whole number (negative counts from the end)");
}

std::int64_t parse_count(const std::string& text, const std::string& option) {
    const auto count = parse_option_number(text, option, "a value", "use a whole number, 0 or more").value;
    if (count < 0) throw UsageError(option + " must be 0 or more, not " + text);
    return count;
}

// ---- index selections -------------------------------------------------------------------

IndexSelection parse_index_selection(const std::vector<std::string>& args) {
    IndexSelection selection;
    if (args.empty()) return selection;
    const bool has_slice = std::any_of(args.begin(), args.end(),
                                       [](const std::string& a) { return a.find(':') != std::string::npos; });
    if (has_slice) {
        if (args.size() != 1) {
            throw UsageError("--idx takes either indices (--idx 1 5 -1) or one slice (--idx 2:10:2), not both");
        }
        const std::string& text = args[0];
        std::vector<std::string> parts;
        std::size_t start = 0;
        while (true) {
            const auto colon = text.find(':', start);
            parts.push_back(text.substr(start, colon == std::string::npos ? std::string::npos : colon - start));
            if (colon == std::string::npos) break;
            start = colon + 1;
        }
        if (parts.size() > 3) {
            throw UsageError("bad --idx slice '" + text + "': use START:END[:STEP] (each part optional, e.g. :10, -5:, ::2)");
        }
        std::optional<std::int64_t>* fields[] = {&selection.slice.start, &selection.slice.stop, &selection.slice.step};
        for (std::size_t i = 0; i < parts.size(); ++i) {
            if (parts[i].empty()) continue;
            const auto value = parse_integer(parts[i]);
            if (!value) {
                throw UsageError("bad --idx slice '" + text + "': '" + parts[i] +
                                 "' is not an integer; use START:END[:STEP], e.g. 0:10:2");
            }
            *fields[i] = *value;
        }
        if (selection.slice.step && *selection.slice.step == 0) {
            throw UsageError("bad --idx slice '" + text + "': the step cannot be zero");
        }
        selection.kind = IndexSelection::Kind::slice;
        return selection;
    }
    selection.kind = IndexSelection::Kind::list;
    for (const auto& arg : args) {
        selection.indices.push_back(
            parse_option_number(arg, "--idx", "values", "use integers (--idx 0 5 -1) or a slice (--idx 0:10)"));
    }
    return selection;
}

std::int64_t normalize_index(const TypedIndex& index, std::int64_t length, const std::string& what) {
    const std::int64_t normalized = index.value < 0 ? index.value + length : index.value;
    if (normalized < 0 || normalized >= length) {
        if (length == 0) throw UsageError("index " + index.text + " is out of range: " + what + " has no rows");
        throw UsageError("index " + index.text + " is out of range for " + what + " (" + std::to_string(length) +
                         " rows): use -" + std::to_string(length) + ".." + std::to_string(length - 1));
    }
    return normalized;
}

std::int64_t normalize_index(std::int64_t index, std::int64_t length, const std::string& what) {
    return normalize_index(TypedIndex{index, std::to_string(index)}, length, what);
}

std::vector<std::int64_t> resolve_selection(const IndexSelection& selection, std::int64_t length,
                                            const std::string& what) {
    switch (selection.kind) {
        case IndexSelection::Kind::all: return iota_rows(length);
        case IndexSelection::Kind::list: {
            std::vector<std::int64_t> out;
            out.reserve(selection.indices.size());
            for (const auto& index : selection.indices) out.push_back(normalize_index(index, length, what));
            return out;
        }
        case IndexSelection::Kind::slice: break;
    }
    // CPython's PySlice_AdjustIndices.
    const std::int64_t step = selection.slice.step.value_or(1);
    if (step == 0) throw UsageError("slice step cannot be zero");
    std::int64_t start = 0;
    std::int64_t stop = 0;
    const auto adjust = [&](std::optional<std::int64_t> value, std::int64_t fallback) {
        if (!value) return fallback;
        std::int64_t v = *value;
        if (v < 0) {
            v += length;
            if (v < 0) v = step < 0 ? -1 : 0;
        } else if (v >= length) {
            v = step < 0 ? length - 1 : length;
        }
        return v;
    };
    start = adjust(selection.slice.start, step < 0 ? length - 1 : 0);
    stop = adjust(selection.slice.stop, step < 0 ? -1 : length);
    // A saturated step (--idx ::99999999999999999999) must not overflow `i`: leave before
    // a step that passes `stop`.
    std::vector<std::int64_t> out;
    if (step > 0) {
        for (std::int64_t i = start; i < stop; i += step) {
            out.push_back(i);
            if (step >= stop - i) break;
        }
    } else {
        for (std::int64_t i = start; i > stop; i += step) {
            out.push_back(i);
            if (step <= stop - i) break;
        }
    }
    return out;
}

// ---- summarize --------------------------------------------------------------------------

TreeNode describe_file(const std::filesystem::path& path) {
    auto file = detail::RawFile::open(path);
    if (!file) throw FormatError("'" + path.string() + "' is not an HDF5 file: pass the path of a store written by fstore build");
    return file->tree();
}

Summary summarize(const std::filesystem::path& path, std::int64_t max_templates) {
    if (max_templates < 0) throw UsageError("--max-templates must be 0 or more");
    Summary summary;
    {
        const auto store = FeatureStore::open(path);
        const auto layout = store.layout();
        summary.rows = store.rows();
        summary.dim = layout.dim;
        summary.image_tokens = layout.image_tokens;
        summary.image_features_shape = {summary.rows, layout.dim};
        const auto first = iota_rows(std::min<std::int64_t>(5, summary.rows));
        if (!first.empty()) {
            const auto ids = store.read_rows(Column::ids, first);
            summary.first_ids.assign(ids.data<std::int64_t>(), ids.data<std::int64_t>() + ids.elements());
        }
        summary.split_counts = split_counts_in_store_order(store);
        const auto templates = store.template_ids();
        summary.template_count = static_cast<std::int64_t>(templates.size());
        for (std::size_t i = 0; i < templates.size() && i < static_cast<std::size_t>(max_templates); ++i) {
            summary.templates.push_back(templates[i]);
        }
        summary.attributes = store.attributes_json();
    }  // the store is closed before the file is walked a second time
    summary.tree = describe_file(path);
    for (const auto& node : summary.tree.children) {
        if (node.name == "image_features" && node.kind == TreeNode::Kind::dataset) summary.image_features_dtype = node.dtype;
    }
    return summary;
}

nlohmann::ordered_json to_json(const Summary& summary) {
    nlohmann::ordered_json attributes = nlohmann::ordered_json::object();
    for (const auto& [name, value] : summary.attributes) attributes[name] = value;
    nlohmann::ordered_json split_counts = nlohmann::ordered_json::object();
    for (const auto& [name, count] : summary.split_counts) split_counts[name] = count;
    return {{"rows", summary.rows},
            {"image_features_shape", summary.image_features_shape},
            {"image_features_dtype", summary.image_features_dtype},
            {"D", summary.dim},
            {"T_img", summary.image_tokens},
            {"first_ids", summary.first_ids},
            {"split_counts", std::move(split_counts)},
            {"templates", summary.templates},
            {"template_count", summary.template_count},
            {"attributes", std::move(attributes)},
            {"tree", tree_json(summary.tree)}};
}

std::string render_tree(const TreeNode& tree) {
    std::string out = tree.name;
    if (!tree.attributes.empty()) out += "  [attrs: " + join(tree.attributes) + "]";
    out += "\n";
    for (std::size_t i = 0; i < tree.children.size(); ++i) {
        render_node(tree.children[i], "", i + 1 == tree.children.size(), out);
    }
    return out;
}

// ---- templates --------------------------------------------------------------------------

std::vector<std::string> list_templates(const FeatureStore& store) {
    auto ids = store.template_ids();
    std::sort(ids.begin(), ids.end());
    return ids;
}

// ---- sample -----------------------------------------------------------------------------

SampleResult sample(const FeatureStore& store, std::int64_t index, bool with_data) {
    return sample(store, TypedIndex{index, std::to_string(index)}, with_data);
}

SampleResult sample(const FeatureStore& store, const TypedIndex& index, bool with_data) {
    SampleResult result;
    result.index = normalize_index(index, store.rows(), "the store");
    const std::vector<std::int64_t> row{result.index};
    result.id = store.read_rows(Column::ids, row).data<std::int64_t>()[0];
    result.label = store.read_rows(Column::labels, row).data<std::int64_t>()[0];
    result.split = store.read_splits(row).at(0);
    store.require_column(Column::image_token_features);
    const auto layout = store.layout();
    result.image_feature_shape = row_shape(Column::image_features, layout);
    result.image_token_feature_shape = row_shape(Column::image_token_features, layout);
    if (with_data) {
        result.image_feature = squeeze_first(store.read_rows(Column::image_features, row));
        result.image_token_feature = squeeze_first(store.read_rows(Column::image_token_features, row));
    }
    return result;
}

nlohmann::json to_json(const SampleResult& result) {
    return {{"index", result.index},
            {"id", result.id},
            {"label", result.label},
            {"split", result.split},
            {"image_feature_shape", result.image_feature_shape},
            {"image_token_feature_shape", result.image_token_feature_shape}};
}

// ---- batch ------------------------------------------------------------------------------

Feature parse_feature(const std::string& name) {
    if (name == "image") return Feature::image;
    if (name == "patches") return Feature::patches;
    if (name == "label") return Feature::label;
    throw UsageError("unknown --feature '" + name + "': use image (CLS features), patches (token features) or label");
}

const char* feature_name(Feature feature) {
    switch (feature) {
        case Feature::image: return "image";
        case Feature::patches: return "patches";
        case Feature::label: return "label";
    }
    return "?";
}

BatchPlan plan_batch(const FeatureStore& store, const BatchRequest& request) {
    BatchPlan plan;
    switch (request.feature) {
        case Feature::image: plan.column = Column::image_features; break;
        case Feature::patches: plan.column = Column::image_token_features; break;
        case Feature::label: plan.column = Column::labels; break;
    }
    store.require_column(plan.column);
    plan.dtype = store.column_dtype(plan.column);
    std::vector<std::int64_t> split_rows;
    std::string what = "the store";
    if (request.split == "all") {
        split_rows = iota_rows(store.rows());
    } else {
        const auto splits = store.read_all_splits();
        std::set<std::string> known(std::begin(kStandardSplits), std::end(kStandardSplits));
        for (std::size_t i = 0; i < splits.size(); ++i) {
            known.insert(splits[i]);
            if (splits[i] == request.split) split_rows.push_back(static_cast<std::int64_t>(i));
        }
        if (!known.count(request.split)) {
            throw UsageError("unknown split '" + request.split + "': use all or one of " +
                             join(std::vector<std::string>(known.begin(), known.end())));
        }
        what = "split '" + request.split + "'";
    }
    const auto positions =
        resolve_selection(request.selection, static_cast<std::int64_t>(split_rows.size()), what);
    plan.rows.reserve(positions.size());
    for (const auto p : positions) plan.rows.push_back(split_rows[static_cast<std::size_t>(p)]);
    plan.shape = {static_cast<std::int64_t>(plan.rows.size())};
    for (const auto extent : row_shape(plan.column, store.layout())) plan.shape.push_back(extent);
    return plan;
}

Array read_batch(const FeatureStore& store, const BatchPlan& plan) {
    if (plan.rows.empty()) {
        Array empty;
        empty.dtype = plan.dtype;
        empty.shape = plan.shape;
        return empty;
    }
    return store.read_rows(plan.column, plan.rows);
}

void write_batch_npy(const FeatureStore& store, const BatchPlan& plan, const std::filesystem::path& out) {
    std::int64_t row_bytes = static_cast<std::int64_t>(dtype_size(plan.dtype));
    for (std::size_t i = 1; i < plan.shape.size(); ++i) row_bytes *= plan.shape[i];
    // ~64 MB per read keeps memory flat for whole-split token exports.
    const std::int64_t block = std::max<std::int64_t>(1, (64ll << 20) / std::max<std::int64_t>(row_bytes, 1));
    npy::StreamWriter writer(out, plan.dtype, plan.shape);
    for (std::size_t begin = 0; begin < plan.rows.size(); begin += static_cast<std::size_t>(block)) {
        const std::size_t end = std::min(plan.rows.size(), begin + static_cast<std::size_t>(block));
        const std::vector<std::int64_t> rows(plan.rows.begin() + static_cast<std::ptrdiff_t>(begin),
                                             plan.rows.begin() + static_cast<std::ptrdiff_t>(end));
        const auto array = store.read_rows(plan.column, rows);
        writer.append(array.bytes.data(), array.bytes.size());
    }
    writer.finish();
}

nlohmann::json array_values_json(const Array& array) {
    if (array.shape.empty()) {
        Array one = array;
        one.shape = {1};
        return array_values_json(one).at(0);
    }
    nlohmann::json out;
    std::int64_t offset = 0;
    values_json(array, 0, offset, out);
    return out;
}

std::string batch_json_line(const Array& array) {
    // Keys in a fixed order (data, dtype, shape), written by hand around the data lists.
    return "{\"data\":" + json_line(array_values_json(array)) + ",\"dtype\":\"" + dtype_name(array.dtype) +
           "\",\"shape\":" + json_line(nlohmann::json(array.shape)) + "}";
}

// ---- fetch ------------------------------------------------------------------------------

FetchResult fetch(const FeatureStore& store, const FetchRequest& request, bool with_data) {
    if (request.concept_only && request.label_only) {
        throw UsageError("--concept and --label exclude each other: pass at most one");
    }
    if (!request.concept_list.empty() && request.label_only) {
        throw UsageError("--concept-list selects rows of concept templates: drop --label");
    }
    for (const auto& id : request.template_ids) reject_option_as_value("--template", id);
    for (const auto& name : request.concept_list) reject_option_as_value("--concept-list", name);
    const auto stored = list_templates(store);
    std::vector<std::string> selected;
    if (request.template_ids.empty()) {
        selected = stored;
    } else {
        for (const auto& id : request.template_ids) {
            if (!std::binary_search(stored.begin(), stored.end(), id)) {
                throw UsageError("unknown template '" + id + "': the store has " +
                                 (stored.empty() ? std::string("no templates") : join(stored)) +
                                 " (list them with `fstore-access templates`)");
            }
            if (std::find(selected.begin(), selected.end(), id) == selected.end()) selected.push_back(id);
        }
    }
    if (request.concept_only || request.label_only) {
        const std::string prefix = request.concept_only ? "concept" : "label";
        selected.erase(std::remove_if(selected.begin(), selected.end(),
                                      [&](const std::string& id) { return !starts_with(id, prefix); }),
                       selected.end());
        if (selected.empty()) {
            throw UsageError("no " + prefix + " template in the selection: the store has " +
                             (stored.empty() ? std::string("no templates") : join(stored)));
        }
    }
    std::sort(selected.begin(), selected.end());
    // Like --label, a selection without concept templates would silently ignore the list.
    if (!request.concept_list.empty() &&
        std::none_of(selected.begin(), selected.end(), [](const std::string& id) { return starts_with(id, "concept"); })) {
        throw UsageError("--concept-list selects rows of concept templates, but " +
                         (selected.empty() ? std::string("the store has no templates")
                                           : "the selection holds none (" + join(selected) + ")") +
                         ": drop --concept-list or select a concept template");
    }

    FetchResult result;
    std::vector<std::int64_t> concept_rows;
    if (!request.concept_list.empty()) {
        const auto concepts = store.json_attribute("concept_texts");
        if (!concepts || !concepts->is_array()) {
            throw FormatError("the store has no concept_texts list attribute, which --concept-list needs: "
                              "fetch whole templates instead");
        }
        for (const auto& name : request.concept_list) {
            std::int64_t found = -1;
            for (std::size_t i = 0; i < concepts->size(); ++i) {
                if ((*concepts)[i].is_string() && (*concepts)[i].get<std::string>() == name) {
                    found = static_cast<std::int64_t>(i);
                    break;
                }
            }
            if (found < 0) {
                result.unknown_concepts.push_back(name);
            } else {
                concept_rows.push_back(found);
            }
        }
        if (concept_rows.empty()) {
            throw UsageError("none of the --concept-list names is a stored concept (" + join(request.concept_list) +
                             "): names must match concept_texts exactly, see `fstore-access summarize --json`");
        }
    }

    const auto stored_prompts = concept_rows.empty() ? StoredPromptTexts{} : prompt_set_texts(store);
    const auto& expected_texts = stored_prompts.texts;
    for (const auto& id : selected) {
        const auto info = store.template_info(id);
        if (request.token_features && !info.has_token_features) {
            throw UsageError("template '" + id + "' has no token features (written without them): use --feature text");
        }
        FetchedTemplate fetched;
        fetched.id = id;
        // The shape of the dataset read (in a damaged group the two may disagree).
        if (request.token_features && info.token_shape.size() == 3) {
            fetched.shape = info.token_shape;
        } else {
            fetched.shape = {info.rows};
            if (request.token_features) fetched.shape.push_back(info.text_tokens);
            fetched.shape.push_back(info.dim);
        }
        const std::int64_t rows = fetched.shape.at(0);
        const bool pick_rows = !concept_rows.empty() && starts_with(id, "concept");
        if (pick_rows && !stored_prompts.problem.empty()) {
            // Without the prompt set there is no telling whether row i is concept i.
            throw FormatError("cannot check that template '" + id + "' was made from concept_texts (" +
                              stored_prompts.problem + "), so --concept-list cannot pick its rows: " +
                              kRebuildTemplates + ", or fetch it without --concept-list");
        }
        if (pick_rows && expected_texts) {
            // Rows are picked by the concept's index in concept_texts: only right in a
            // template made from that list.
            const auto it = expected_texts->find(id);
            if (it == expected_texts->end() || store.template_texts(id) != it->second) {
                throw DataError("template '" + id + "' was not made from the store's concept_texts (left by an "
                                "earlier prompt set?), so --concept-list cannot pick its rows: " +
                                kRebuildTemplates + ", or fetch it without --concept-list");
            }
        }
        if (pick_rows) {
            for (const auto row : concept_rows) {
                if (row >= rows) {
                    throw DataError("template '" + id + "' has " + std::to_string(rows) +
                                    " rows but concept_texts lists more concepts: the store is inconsistent, "
                                    "run `fstore-access verify`");
                }
            }
            fetched.shape[0] = static_cast<std::int64_t>(concept_rows.size());
        }
        if (with_data) {
            auto values = store.read_template(id, request.token_features);
            if (pick_rows) {
                const std::size_t row_bytes =
                    values.bytes.size() / static_cast<std::size_t>(std::max<std::int64_t>(values.shape.at(0), 1));
                Array picked;
                picked.dtype = values.dtype;
                picked.shape = values.shape;
                picked.shape[0] = static_cast<std::int64_t>(concept_rows.size());
                picked.bytes.reserve(row_bytes * concept_rows.size());
                for (const auto row : concept_rows) {
                    const auto first = values.bytes.begin() + static_cast<std::ptrdiff_t>(row_bytes * static_cast<std::size_t>(row));
                    picked.bytes.insert(picked.bytes.end(), first, first + static_cast<std::ptrdiff_t>(row_bytes));
                }
                values = std::move(picked);
            }
            fetched.shape = values.shape;
            fetched.values = std::move(values);
        }
        result.templates.push_back(std::move(fetched));
    }
    return result;
}

nlohmann::json to_json(const FetchResult& result) {
    nlohmann::json templates = nlohmann::json::object();
    for (const auto& t : result.templates) templates[t.id] = {{"shape", t.shape}};
    nlohmann::json out = {{"templates", std::move(templates)}};
    if (!result.unknown_concepts.empty()) out["unknown_concepts"] = result.unknown_concepts;
    return out;
}

// ---- clear-templates ----------------------------------------------------------------------

std::vector<std::string> clear_templates(const std::filesystem::path& path) {
    // templates_only: a torn tail of image rows stays as found (only a build trims it).
    auto store = FeatureStore::open(path, FeatureStore::Access::templates_only);
    std::vector<std::string> ids;
    try {
        ids = list_templates(store);
    } catch (const FormatError&) {
        // /templates is not a group: nothing to list, and clearing replaces it.
    }
    store.clear_templates();
    store.commit();
    return ids;
}

// ---- verify -----------------------------------------------------------------------------

namespace {

constexpr const char* kColumns[] = {"image_features", "image_token_features", "ids", "labels", "split"};

// Structure checks on the raw file (metadata only).
void verify_structure(const detail::RawFile& file, VerifyReport& report) {
    const auto dim = file.int_attribute("/", "D");
    const auto tokens = file.int_attribute("/", "T_img");
    if (!dim) report.findings.push_back("root attribute D (int64) is missing");
    if (!tokens) report.findings.push_back("root attribute T_img (int64) is missing");

    std::map<std::string, std::int64_t> lengths;
    for (const char* name : kColumns) {
        const auto ds = file.dataset(std::string("/") + name);
        if (!ds) {
            report.findings.push_back(std::string("dataset /") + name + " is missing");
            continue;
        }
        if (ds->dims.empty()) {
            report.findings.push_back(std::string("dataset /") + name + " is a scalar, not a row dataset");
            continue;
        }
        lengths[name] = ds->dims[0];
        const std::string expected_type = std::string(name) == "split" ? "str"
                                          : (std::string(name) == "ids" || std::string(name) == "labels") ? "int64"
                                                                                                          : "float16";
        if (ds->dtype != expected_type) {
            report.findings.push_back(std::string("dataset /") + name + " has type " + ds->dtype + ", expected " +
                                      expected_type);
        }
        std::vector<std::int64_t> expected_shape{ds->dims[0]};
        if (std::string(name) == "image_features" && dim) expected_shape = {ds->dims[0], *dim};
        if (std::string(name) == "image_token_features" && dim && tokens) expected_shape = {ds->dims[0], *tokens, *dim};
        if ((std::string(name) == "image_features" && dim) || (std::string(name) == "image_token_features" && dim && tokens) ||
            std::string(name) == "ids" || std::string(name) == "labels" || std::string(name) == "split") {
            if (ds->dims != expected_shape) {
                report.findings.push_back(std::string("dataset /") + name + " has shape " + shape_text(ds->dims) +
                                          ", expected " + shape_text(expected_shape) + " from the D/T_img attributes");
            }
        }
    }
    report.checks.push_back("datasets present with the schema's types and shapes");
    if (!lengths.empty()) {
        std::set<std::int64_t> distinct;
        std::string listing;
        for (const auto& [name, length] : lengths) {
            distinct.insert(length);
            if (!listing.empty()) listing += ", ";
            listing += name + "=" + std::to_string(length);
        }
        if (distinct.size() > 1) {
            report.findings.push_back("the five row datasets have different lengths (" + listing +
                                      "): an interrupted write; open the store with fstore build to trim it");
        }
        report.rows = *distinct.begin();
    }
    report.checks.push_back("row datasets have equal lengths");

    if (!file.is_group("/templates")) {
        report.findings.push_back("group /templates is missing");
        return;
    }
    for (const auto& id : file.members("/templates")) {
        const std::string group = "/templates/" + id;
        const std::string where = "template '" + id + "'";
        if (!file.is_group(group)) {
            report.findings.push_back(where + " is not a group");
            continue;
        }
        const auto k = file.int_attribute(group, "K");
        const auto d = file.int_attribute(group, "D");
        const auto t = file.int_attribute(group, "T_txt");
        if (!k) report.findings.push_back(where + ": attribute K is missing");
        if (!d) report.findings.push_back(where + ": attribute D is missing");
        if (!t) report.findings.push_back(where + ": attribute T_txt is missing");
        const auto features = file.dataset(group + "/text_features");
        const auto token_features = file.dataset(group + "/text_token_features");
        const auto texts = file.dataset(group + "/texts");
        if (!features) {
            report.findings.push_back(where + ": dataset text_features is missing");
        } else if (features->dims.size() != 2) {
            report.findings.push_back(where + ": text_features has shape " + shape_text(features->dims) + ", expected (K, D)");
        } else {
            if (k && features->dims[0] != *k) {
                report.findings.push_back(where + ": attribute K=" + std::to_string(*k) + " but text_features has " +
                                          std::to_string(features->dims[0]) + " rows");
            }
            if (d && features->dims[1] != *d) {
                report.findings.push_back(where + ": attribute D=" + std::to_string(*d) + " but text_features has width " +
                                          std::to_string(features->dims[1]));
            }
            if (dim && features->dims[1] != *dim) {
                report.findings.push_back(where + ": text_features width " + std::to_string(features->dims[1]) +
                                          " differs from the store's D=" + std::to_string(*dim));
            }
        }
        if (!texts) {
            report.findings.push_back(where + ": dataset texts is missing");
        } else if (k && (texts->dims.size() != 1 || texts->dims[0] != *k)) {
            report.findings.push_back(where + ": attribute K=" + std::to_string(*k) + " but texts has shape " +
                                      shape_text(texts->dims));
        }
        if (token_features) {
            const auto& dims = token_features->dims;
            if (dims.size() != 3) {
                report.findings.push_back(where + ": text_token_features has shape " + shape_text(dims) +
                                          ", expected (K, T_txt, D)");
            } else {
                if (t && dims[1] != *t) {
                    report.findings.push_back(where + ": attribute T_txt=" + std::to_string(*t) +
                                              " but text_token_features has " + std::to_string(dims[1]) + " tokens");
                }
                if (k && dims[0] != *k) {
                    report.findings.push_back(where + ": attribute K=" + std::to_string(*k) +
                                              " but text_token_features has " + std::to_string(dims[0]) + " rows");
                }
                if (d && dims[2] != *d) {
                    report.findings.push_back(where + ": attribute D=" + std::to_string(*d) +
                                              " but text_token_features has width " + std::to_string(dims[2]));
                }
            }
        } else if (t && *t != -1) {
            report.findings.push_back(where + ": attribute T_txt=" + std::to_string(*t) +
                                      " but there is no text_token_features dataset (T_txt must be -1)");
        }
    }
    report.checks.push_back("template attributes K, D, T_txt match their datasets");
}

// Content checks through FeatureStore (reads ids, split and texts).
void verify_contents(const FeatureStore& store, std::int64_t rows, VerifyReport& report) {
    if (rows > 0) {
        const auto ids = store.read_rows(Column::ids, iota_rows(rows));
        std::int64_t wrong = 0;
        std::int64_t first_wrong = -1;
        for (std::int64_t i = 0; i < rows; ++i) {
            if (ids.data<std::int64_t>()[i] != i) {
                if (first_wrong < 0) first_wrong = i;
                ++wrong;
            }
        }
        if (wrong) {
            report.findings.push_back("ids are not 0..N-1: row " + std::to_string(first_wrong) + " has id " +
                                      std::to_string(ids.data<std::int64_t>()[first_wrong]) + " (" +
                                      std::to_string(wrong) + " rows differ)");
        }
    }
    report.checks.push_back("ids are 0..N-1");

    const auto counted = store.split_counts_from_data();
    std::map<std::string, std::int64_t> attribute;
    bool attribute_ok = true;
    try {
        const auto json = store.json_attribute("split_counts");
        if (!json) {
            if (rows > 0) report.findings.push_back("root attribute split_counts is missing although the store has rows");
            attribute_ok = false;
        } else if (!json->is_object()) {
            report.findings.push_back("root attribute split_counts is not a JSON object: " + json->dump());
            attribute_ok = false;
        } else {
            for (const auto& [name, value] : json->items()) {
                if (!value.is_number_integer()) {
                    report.findings.push_back("split_counts[\"" + name + "\"] is not an integer: " + value.dump());
                    attribute_ok = false;
                } else if (value.get<std::int64_t>() != 0) {
                    attribute[name] = value.get<std::int64_t>();
                }
            }
        }
    } catch (const Error& e) {
        report.findings.push_back(std::string("root attribute split_counts is unreadable: ") + e.what());
        attribute_ok = false;
    }
    std::map<std::string, std::int64_t> nonzero;
    for (const auto& [name, count] : counted) {
        if (count) nonzero[name] = count;
    }
    if (attribute_ok && attribute != nonzero) {
        // replace: split names of a hand-made store need not be UTF-8.
        const auto shown = [](const std::map<std::string, std::int64_t>& counts) {
            return nlohmann::json(counts).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        };
        report.findings.push_back("split_counts attribute " + shown(attribute) +
                                  " differs from the counts in the complete rows of /split " + shown(nonzero) +
                                  " (a resume would skip or repeat samples)");
    }
    report.checks.push_back("split_counts attribute equals the counts in /split");

    const auto stored_prompts = prompt_set_texts(store);
    const auto& expected_texts = stored_prompts.texts;
    if (!stored_prompts.problem.empty()) report.findings.push_back(stored_prompts.problem);
    std::vector<std::string> template_ids;
    try {
        template_ids = store.template_ids();
    } catch (const FormatError& e) {
        report.findings.push_back(e.what());  // /templates itself is damaged
    }
    for (const auto& id : template_ids) {
        try {
            const auto info = store.template_info(id);
            const auto texts = store.template_texts(id);
            const auto hash = texts_hash(texts);
            if (hash != info.texts_hash) {
                report.findings.push_back("template '" + id + "': texts_hash " + info.texts_hash +
                                          " does not match its texts (" + hash + ")");
            }
            if (expected_texts) {
                const auto expected = expected_texts->find(id);
                if (expected == expected_texts->end() && is_prompt_template_id(id)) {
                    report.findings.push_back("template '" + id + "' is not one of the prompt set's (its "
                                              "prompt_temp_for_* attributes list fewer templates): left by an "
                                              "earlier prompt set; " + std::string(kRebuildTemplates));
                } else if (expected != expected_texts->end() && texts != expected->second) {
                    report.findings.push_back("template '" + id + "' holds other texts than the store's prompt "
                                              "attributes give: left by an earlier prompt set; " +
                                              std::string(kRebuildTemplates));
                }
            }
        } catch (const Error& e) {
            const std::string where = "template '" + id + "'";
            const bool reported = std::any_of(report.findings.begin(), report.findings.end(), [&](const std::string& f) {
                return starts_with(f, where + " ") || starts_with(f, where + ":");
            });
            if (!reported) report.findings.push_back(where + " is unreadable: " + e.what());
        }
    }
    report.checks.push_back("template texts_hash matches texts");
    // Templates the prompt attributes list but the store lacks are no finding: clear-templates
    // and an interrupted text stage leave them out, and fstore build --run-text writes them.
    if (expected_texts) report.checks.push_back("templates hold the texts of the prompt attributes");
}

}  // namespace

namespace {
// Reads every row of the feature and label datasets, a block at a time, and every template's
// features: each block that fails to read is a finding (its message names the rows).
void verify_data(const FeatureStore& store, std::int64_t rows, VerifyReport& report) {
    constexpr std::size_t kMaxFindingsPerDataset = 5;  // a damaged disk region is one story
    for (const Column column : {Column::image_features, Column::image_token_features, Column::labels}) {
        try {
            store.require_column(column);
        } catch (const FormatError&) {
            continue;  // verify_structure reported the missing dataset
        }
        // ~8 MB per read of ConceptCLIP's tokens (729 x 1152 halves a row).
        const std::int64_t block = column == Column::image_token_features ? 4 : 4096;
        std::size_t failures = 0;
        std::int64_t failed_rows = 0;
        for (std::int64_t start = 0; start < rows; start += block) {
            std::vector<std::int64_t> indices(static_cast<std::size_t>(std::min(block, rows - start)));
            std::iota(indices.begin(), indices.end(), start);
            try {
                store.read_rows(column, indices);
            } catch (const Error& e) {
                if (++failures <= kMaxFindingsPerDataset) report.findings.push_back(e.what());
                failed_rows += static_cast<std::int64_t>(indices.size());
            }
        }
        if (failures > kMaxFindingsPerDataset) {
            report.findings.push_back(std::to_string(failures - kMaxFindingsPerDataset) + " more blocks of " +
                                      std::string("/") + column_name(column) + " cannot be read (" +
                                      std::to_string(failed_rows) + " rows in all)");
        }
    }
    report.checks.push_back("every feature and label row can be read");
    std::vector<std::string> ids;
    try {
        ids = store.template_ids();
    } catch (const FormatError&) {
        // verify_contents reported it
    }
    for (const auto& id : ids) {
        for (const bool tokens : {false, true}) {
            try {
                const auto info = store.template_info(id);
                if (!tokens || info.has_token_features) store.read_template(id, tokens);
            } catch (const Error& e) {
                const std::string finding = "template '" + id + "' is unreadable: " + e.what();
                if (std::find(report.findings.begin(), report.findings.end(), finding) == report.findings.end())
                    report.findings.push_back(finding);
            }
        }
    }
    report.checks.push_back("every template's features can be read");
}
}  // namespace

VerifyReport verify(const std::filesystem::path& path, bool read_data) {
    VerifyReport report;
    std::optional<FeatureStore> store;
    std::string open_error;
    try {
        store.emplace(FeatureStore::open(path));
    } catch (const FormatError& e) {
        open_error = e.what();
    }
    const auto file = detail::RawFile::open(path);
    if (!file || !file->exists("/image_features")) {
        if (!open_error.empty()) throw FormatError(open_error);
        throw FormatError("'" + path.string() + "' is not an fstore store (no /image_features dataset): "
                          "pass the path of a store written by fstore build");
    }
    verify_structure(*file, report);
    if (!store) {
        report.findings.push_back("fstore cannot open the store: " + open_error);
        return report;
    }
    const std::int64_t complete = store->rows();
    if (complete < report.rows) {
        const std::int64_t torn = report.rows - complete;
        const std::string which = torn == 1 ? "row " + std::to_string(complete) + " (the last of " +
                                                  std::to_string(report.rows) + ") is"
                                            : "rows " + std::to_string(complete) + ".." +
                                                  std::to_string(report.rows - 1) + " (" + std::to_string(torn) +
                                                  " of " + std::to_string(report.rows) + ") are";
        report.findings.push_back(which + " incomplete: id not the row number or split empty (an "
                                  "interrupted write); readers hide them and the next fstore build trims them");
    }
    report.checks.push_back("every row is complete (id = row number, split set)");
    verify_contents(*store, std::min(report.rows, complete), report);
    if (read_data) verify_data(*store, std::min(report.rows, complete), report);
    return report;
}

nlohmann::json to_json(const VerifyReport& report) {
    return {{"ok", report.ok()}, {"rows", report.rows}, {"checks", report.checks}, {"findings", report.findings}};
}

}  // namespace fstore
