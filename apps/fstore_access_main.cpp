// fstore-access: reads a feature store from the command line (the reference reader's
// subcommands plus `verify`). Parsing and printing only; the work is in fstore/query.hpp.
#include <cstdint>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "fstore/cli.hpp"
#include "fstore/error.hpp"
#include "fstore/npy.hpp"
#include "fstore/query.hpp"

namespace {

const std::vector<std::string> kExamples = {
    "fstore-access summarize",
    "fstore-access --path runs/conceptclip_features.h5 templates",
    "fstore-access sample -1 --out last.npz",
    "fstore-access batch --split val --feature image --idx 0:100 --out val_cls.npy",
    "fstore-access batch --split test --feature label --idx 0 5 -1 --json",
    "fstore-access batch --feature patches --idx ::-50 --out tokens.npy",
    "fstore-access fetch --concept --concept-list \"Round nucleus\" \"Pale cytoplasm\" --out concepts.npz",
    "fstore-access fetch --template label_prompts_t01 --feature tokens",
    "fstore-access clear-templates",
    "fstore-access verify --json",
};

constexpr const char* kExitCodes = R"(Exit codes: 0 ok, 1 verify found problems, 2 bad arguments (unknown option, split, feature
or template; index out of range), 3 file not found, 4 not HDF5 / not an fstore store,
5 store locked by a running writer, 7 stale templates (fetch --concept-list), 10 I/O error
(disk full or failing, store not writable), 70 internal error, 141 stdout closed by its reader
(SIGPIPE).)";

// A template: summarize's JSON is an ordered_json (split_counts in store order).
template <class Json = nlohmann::json>
void print_json(const Json& value) {
    std::cout << fstore::json_line(value) << '\n';
}

struct Options {
    std::string path = "./conceptclip_features.h5";
    std::string log_level = "warn";
    bool json = false;
    bool verify_data = false;  // verify --data
    std::string max_templates = "3";  // numbers stay text: the library parses and reports them
    std::string index;
    std::optional<std::string> out;  // given but empty is an error, not "no --out"
    std::string split = "all";
    std::string feature = "image";
    std::vector<std::string> idx;
    std::vector<std::string> template_ids;
    bool concept_only = false;
    bool label_only = false;
    std::vector<std::string> concept_list;
    std::string text_feature = "text";
};

int run_summarize(const Options& o) {
    const auto summary = fstore::summarize(o.path, fstore::parse_count(o.max_templates, "--max-templates"));
    if (o.json) {
        print_json(fstore::to_json(summary));
        return 0;
    }
    std::cout << "image_features: " << fstore::shape_text(summary.image_features_shape) << ' '
              << summary.image_features_dtype << '\n';
    std::cout << "first ids: [";
    for (std::size_t i = 0; i < summary.first_ids.size(); ++i) std::cout << (i ? ", " : "") << summary.first_ids[i];
    std::cout << "]\nsplit counts:";
    if (summary.split_counts.empty()) std::cout << " (none)";
    for (const auto& [name, count] : summary.split_counts) std::cout << ' ' << name << '=' << count;
    std::cout << "\ntemplates (" << summary.templates.size() << " of " << summary.template_count << "):";
    for (const auto& id : summary.templates) std::cout << ' ' << id;
    std::cout << "\n\n" << fstore::render_tree(summary.tree);
    return 0;
}

int run_templates(const Options& o) {
    const auto ids = fstore::list_templates(fstore::FeatureStore::open(o.path));
    if (o.json) {
        print_json({{"templates", ids}});
        return 0;
    }
    for (const auto& id : ids) std::cout << id << '\n';
    return 0;
}

int run_sample(const Options& o) {
    const auto index = fstore::parse_index(o.index, "index");
    if (o.out) fstore::npy::check_output_path(*o.out, fstore::npy::FileFormat::npz);
    const bool quiet = o.out && fstore::npy::takes_stdout(*o.out, o.json);  // stdout holds the .npz
    const auto store = fstore::FeatureStore::open(o.path);
    const auto result = fstore::sample(store, index, o.out.has_value());
    if (o.out) {
        fstore::npy::write_npz(*o.out, {{"image_feature", *result.image_feature},
                                        {"image_token_feature", *result.image_token_feature}});
    }
    if (o.json) {
        print_json(fstore::to_json(result));
    } else if (!quiet) {
        std::cout << "index " << result.index << ": id " << result.id << ", label " << result.label << ", split "
                  << result.split << "\nimage_feature: " << fstore::shape_text(result.image_feature_shape)
                  << "\nimage_token_feature: " << fstore::shape_text(result.image_token_feature_shape) << '\n';
        if (o.out) std::cout << "wrote " << *o.out << '\n';
    }
    return 0;
}

int run_batch(const Options& o) {
    fstore::BatchRequest request;
    request.split = o.split;
    request.feature = fstore::parse_feature(o.feature);
    request.selection = fstore::parse_index_selection(o.idx);
    if (o.out) fstore::npy::check_output_path(*o.out, fstore::npy::FileFormat::npy);
    const bool quiet = o.out && fstore::npy::takes_stdout(*o.out, o.json);  // stdout holds the .npy
    const auto store = fstore::FeatureStore::open(o.path);
    const auto plan = fstore::plan_batch(store, request);
    if (o.json) {
        const auto array = fstore::read_batch(store, plan);
        if (o.out) fstore::npy::write_npy(*o.out, array);
        std::cout << fstore::batch_json_line(array) << '\n';
        return 0;
    }
    if (o.out) fstore::write_batch_npy(store, plan, *o.out);
    if (quiet) return 0;
    std::cout << fstore::feature_name(request.feature) << " rows of " << (o.split == "all" ? "all splits" : "split '" + o.split + "'")
              << ": shape " << fstore::shape_text(plan.shape) << ' ' << fstore::dtype_name(plan.dtype) << '\n';
    if (o.out) std::cout << "wrote " << *o.out << '\n';
    return 0;
}

int run_fetch(const Options& o) {
    if (o.out) fstore::npy::check_output_path(*o.out, fstore::npy::FileFormat::npz);
    const bool quiet = o.out && fstore::npy::takes_stdout(*o.out, o.json);  // stdout holds the .npz
    const auto store = fstore::FeatureStore::open(o.path);
    fstore::FetchRequest request;
    request.template_ids = o.template_ids;
    request.concept_only = o.concept_only;
    request.label_only = o.label_only;
    request.concept_list = o.concept_list;
    request.token_features = o.text_feature == "tokens";
    const auto result = fstore::fetch(store, request, o.out.has_value());
    for (const auto& name : result.unknown_concepts) {
        spdlog::warn("unknown concept '{}' skipped: names must match the store's concept_texts exactly", name);
    }
    if (o.out) {
        std::vector<std::pair<std::string, fstore::Array>> members;
        for (const auto& t : result.templates) members.emplace_back(t.id, *t.values);
        fstore::npy::write_npz(*o.out, members);
    }
    if (o.json) {
        print_json(fstore::to_json(result));
        return 0;
    }
    if (quiet) return 0;
    for (const auto& t : result.templates) std::cout << t.id << ": " << fstore::shape_text(t.shape) << " float32\n";
    if (result.templates.empty()) std::cout << "no templates stored\n";
    if (o.out) std::cout << "wrote " << *o.out << '\n';
    return 0;
}

int run_clear_templates(const Options& o) {
    const auto removed = fstore::clear_templates(o.path);
    if (o.json) {
        print_json({{"removed", removed}});
        return 0;
    }
    std::cout << "removed " << removed.size() << " template" << (removed.size() == 1 ? "" : "s");
    for (const auto& id : removed) std::cout << ' ' << id;
    std::cout << '\n';
    return 0;
}

int run_verify(const Options& o) {
    const auto report = fstore::verify(o.path, o.verify_data);
    if (o.json) {
        print_json(fstore::to_json(report));
    } else {
        for (const auto& finding : report.findings) std::cout << "FINDING: " << finding << '\n';
        if (report.ok()) {
            std::cout << "ok: " << report.rows << " rows; " << report.checks.size() << " checks passed\n";
        } else {
            std::cout << report.findings.size() << " finding" << (report.findings.size() == 1 ? "" : "s") << " in "
                      << o.path << '\n';
        }
    }
    return static_cast<int>(report.ok() ? fstore::ExitCode::ok : fstore::ExitCode::findings);
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    CLI::App app{"fstore-access: read and check a ConceptCLIP feature store (an h5py-compatible HDF5 file\n"
                 "written by fstore build or the Python reference pipeline).",
                 "fstore-access"};
    fstore::cli::apply_conventions(app);
    app.require_subcommand(1, 1);
    app.fallthrough();  // global options may also follow the subcommand
    app.add_option("--path,--h5", o.path, "Store file to read")->capture_default_str()->check(fstore::cli::non_empty_path());
    app.add_option("--log-level", o.log_level, "Logging on stderr: trace, debug, info, warn, error or off")
        ->capture_default_str();
    const auto add_json = [&o](CLI::App* sub) {
        sub->add_flag("--json", o.json, "Print the result as one JSON object on stdout");
    };

    auto* summarize = app.add_subcommand(
        "summarize", "Shape of image_features, first ids, split counts, first templates and a tree of the file");
    summarize->add_option("--max-templates", o.max_templates, "How many template ids to list (0 or more)")
        ->type_name("INT")
        ->capture_default_str();
    add_json(summarize);

    auto* templates = app.add_subcommand("templates", "List the stored template ids, sorted");
    add_json(templates);

    auto* sample = app.add_subcommand("sample", "Id, label, split and feature shapes of one row");
    sample->add_option("index", o.index, "Row number; negative counts from the end (-1 = last)")->required();
    sample->add_option("--out", o.out, "Also write the row's features to FILE.npz (image_feature, image_token_feature)");
    add_json(sample);

    auto* batch = app.add_subcommand(
        "batch", "Rows of one feature from a split; --idx counts within the split (numpy indexing)");
    batch->add_option("--split", o.split, "all, train, val, test (or another split name in the store)")
        ->capture_default_str();
    batch->add_option("--feature", o.feature, "image (CLS, float16), patches (tokens, float16) or label (int64)")
        ->capture_default_str()
        ->check(CLI::IsMember({"image", "patches", "label"}));
    batch->add_option("--idx", o.idx,
                      "Indices (I J K, negative from the end) or one slice START:END[:STEP] (:10, -5:, ::2); "
                      "default: every row of the split")
        ->expected(1, -1);
    batch->add_option("--out", o.out, "Write the rows to FILE.npy");
    add_json(batch);

    auto* fetch = app.add_subcommand("fetch", "Text features of templates (prints shapes; --out writes them)");
    fetch->add_option("--template", o.template_ids, "Template ids (default: all)")->expected(1, -1);
    auto* concept_flag = fetch->add_flag("--concept", o.concept_only, "Only templates whose id starts with 'concept'");
    auto* label_flag = fetch->add_flag("--label", o.label_only, "Only templates whose id starts with 'label'");
    concept_flag->excludes(label_flag);
    fetch->add_option("--concept-list", o.concept_list,
                      "Keep only these concepts' rows of concept templates, in this order (names from concept_texts)")
        ->expected(1, -1);
    fetch->add_option("--feature", o.text_feature, "text (text_features, K×D) or tokens (text_token_features, K×T×D)")
        ->capture_default_str()
        ->check(CLI::IsMember({"text", "tokens"}));
    fetch->add_option("--out", o.out, "Write the features to FILE.npz, one array per template id");
    add_json(fetch);

    auto* clear = app.add_subcommand("clear-templates",
                                     "Delete every template group (image features are never touched)");
    add_json(clear);

    auto* verify = app.add_subcommand(
        "verify", "Check the store's integrity; exit 0 when clean, 1 when something is wrong");
    verify->add_flag("--data", o.verify_data,
                     "Also read every feature row and template (finds damaged chunks; reads the whole file)");
    add_json(verify);

    fstore::cli::set_help_footers(app, kExamples, kExitCodes);

    if (const auto exit_code = fstore::cli::parse(app, argc, argv, std::cout, std::cerr)) return *exit_code;
    return fstore::run_guarded([&]() -> int {
        fstore::configure_logging("fstore-access", o.log_level);
        if (summarize->parsed()) return run_summarize(o);
        if (templates->parsed()) return run_templates(o);
        if (sample->parsed()) return run_sample(o);
        if (batch->parsed()) return run_batch(o);
        if (fetch->parsed()) return run_fetch(o);
        if (clear->parsed()) return run_clear_templates(o);
        return run_verify(o);
    }, o.json && !(o.out && fstore::npy::takes_stdout(*o.out, false)));  // stdout may be the --out file
}
