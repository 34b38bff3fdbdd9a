// fstore: encode with a CLIP-family TorchScript model (see docs/model-format.md).
//   fstore embed --model M [--text T ...] [--image PATH ...] [--out FILE.npz] [--json]
//   fstore model-info --model M [--json]
//   fstore build [--run-text] [--run-image] --model M --h5 STORE ... (see `fstore build --help`)
// Argument parsing and printing only; the behaviour lives in the library (fstore_embed).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <malloc.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "fstore/cli.hpp"
#include "fstore/error.hpp"
#include "fstore/half.hpp"
#include "fstore/model.hpp"
#include "fstore/npy.hpp"
#include "fstore/pipeline.hpp"
#include "fstore/progress.hpp"
#include "fstore/query.hpp"
#include "fstore/signals.hpp"
#include "fstore/tokenizer.hpp"

namespace {

// More threads than this is a typo, not a machine: refuse it before starting them.
constexpr int max_threads = 1024;

struct ModelArgs {
    std::string model = "models/conceptclip.pt";
    std::string device = "auto";
    std::string precision = "fp32";
    int threads = 0;

    void add_to(CLI::App& app) {
        app.add_option("--model", model, "TorchScript model archive (docs/model-format.md)")
            ->capture_default_str()
            ->check(fstore::cli::non_empty_path());
        app.add_option("--device", device, "auto | cpu | cuda | cuda:N")->capture_default_str();
        app.add_option("--precision", precision, "fp32 | fp16 | bf16 (fp16/bf16 need CUDA)")->capture_default_str();
        fstore::cli::add_integer(app, "--threads", threads, "LibTorch CPU threads (0 = all cores)", 0, max_threads);
    }
    fstore::ClipModel load() const {
        return fstore::ClipModel::load(model, {device, fstore::parse_precision(precision), threads, true});
    }
};

nlohmann::json optional_json(const std::optional<double>& v) {
    return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

int model_info(const ModelArgs& args, bool as_json) {
    const auto model = args.load();
    const auto& c = model.config();
    fstore::make_model_tokenizer(c);  // a broken tokenizer file fails here, as in build
    const auto& s = model.logit_scalars();
    nlohmann::ordered_json info = {
        {"path", model.path()},
        {"sha256", model.archive_sha256()},
        {"format", c.format},
        {"name", c.name},
        {"embed_dim", c.embed_dim},
        {"image_tokens", c.image_tokens},
        {"image_size", c.image_size},
        {"resample", c.resample},
        {"image_mean", c.image_mean},
        {"image_std", c.image_std},
        {"context_length", c.context_length},
        {"tokenizer", nlohmann::json::parse(c.tokenizer_json)},
        {"logit_scale", optional_json(s.logit_scale)},
        {"logit_bias", optional_json(s.logit_bias)},
        {"concept_logit_scale", optional_json(s.concept_logit_scale)},
        {"concept_logit_bias", optional_json(s.concept_logit_bias)},
        {"device", model.device()},
        {"precision", fstore::to_string(model.precision())},
        {"threads", model.threads()},
    };
    if (as_json) {
        std::cout << fstore::json_line(info) << '\n';
        return 0;
    }
    for (auto it = info.begin(); it != info.end(); ++it) {
        std::cout << fmt::format("{:<20} {}\n", it.key(),
                                 it->is_string() ? it->get<std::string>() : it->dump());
    }
    return 0;
}

template <class T>
fstore::Array to_array(fstore::DType dtype, std::vector<std::int64_t> shape, const std::vector<T>& values) {
    fstore::Array a;
    a.dtype = dtype;
    a.shape = std::move(shape);
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(values.data());
    a.bytes.assign(bytes, bytes + values.size() * sizeof(T));
    return a;
}

using NamedArrays = std::vector<std::pair<std::string, fstore::Array>>;

// Appends name_cls / name_tokens in the requested dtype.
void add_embeddings(NamedArrays& members, const std::string& name, const fstore::Embeddings& e) {
    const std::vector<std::int64_t> cls_shape{e.batch, e.dim}, tok_shape{e.batch, e.tokens, e.dim};
    if (e.type == fstore::OutputType::float32) {
        members.emplace_back(name + "_cls", to_array(fstore::DType::f32, cls_shape, e.cls_f32));
        members.emplace_back(name + "_tokens", to_array(fstore::DType::f32, tok_shape, e.tokens_f32));
    } else {
        members.emplace_back(name + "_cls", to_array(fstore::DType::f16, cls_shape, e.cls_f16));
        members.emplace_back(name + "_tokens", to_array(fstore::DType::f16, tok_shape, e.tokens_f16));
    }
}

// What `fstore embed` outputs: input_ids, text_cls, text_tokens, image_cls, image_tokens
// (the text ones only with texts, the image ones only with images).
NamedArrays embed_arrays(const fstore::EmbedResult& result) {
    NamedArrays members;
    if (result.text_batch > 0) {
        members.emplace_back("input_ids", to_array(fstore::DType::i64, {result.text_batch, result.text_length},
                                                   result.input_ids));
        add_embeddings(members, "text", result.text);
    }
    if (result.image.batch > 0) add_embeddings(members, "image", result.image);
    return members;
}

// The first few values of an array, for a glance at the output.
std::string first_values(const fstore::Array& a) {
    std::string out;
    for (std::int64_t i = 0; i < std::min<std::int64_t>(a.elements(), 5); ++i) {
        const auto k = static_cast<std::size_t>(i);
        out += i ? ", " : "";
        switch (a.dtype) {
        case fstore::DType::f32: out += fmt::format("{:.6f}", a.data<float>()[k]); break;
        case fstore::DType::f16: out += fmt::format("{:.6f}", fstore::half_to_float(a.data<std::uint16_t>()[k])); break;
        case fstore::DType::i64: out += std::to_string(a.data<std::int64_t>()[k]); break;
        }
    }
    return a.elements() > 5 ? out + " ..." : out;
}

int embed(const ModelArgs& args, const fstore::EmbedRequest& request, const std::optional<std::string>& out,
          bool as_json) {
    if (request.texts.empty() && request.image_paths.empty()) {
        throw fstore::UsageError("nothing to embed: pass --text TEXT and/or --image PATH");
    }
    if (out) fstore::npy::check_output_path(*out, fstore::npy::FileFormat::npz);  // before loading the model
    const bool quiet = out && fstore::npy::takes_stdout(*out, as_json);  // stdout holds the .npz
    auto model = args.load();
    const auto members = embed_arrays(fstore::embed(model, request));
    if (out) fstore::npy::write_npz(*out, members);
    if (as_json) {
        nlohmann::ordered_json arrays = nlohmann::ordered_json::object();
        for (const auto& [name, a] : members) arrays[name] = {{"shape", a.shape}, {"dtype", fstore::dtype_name(a.dtype)}};
        std::cout << fstore::json_line(nlohmann::ordered_json{
                         {"out", out ? nlohmann::ordered_json(*out) : nlohmann::ordered_json(nullptr)},
                         {"arrays", arrays}})
                  << '\n';
        return 0;
    }
    if (quiet) return 0;
    for (const auto& [name, a] : members) {
        std::cout << fmt::format("{:<12} {} {}: {}\n", name, fstore::shape_text(a.shape),
                                 fstore::dtype_name(a.dtype), first_values(a));
    }
    if (out) std::cout << fmt::format("wrote {}\n", *out);
    return 0;
}

// ---- fstore build (the pipeline area's subcommand) -----------------------------------

struct BuildArgs {
    fstore::BuildOptions o;
    ModelArgs model;
    bool run_text = false, run_image = false, skip_text = false, skip_image = false;
    bool no_resume = false, no_progress = false, as_json = false;
    std::string h5 = o.h5_path.string(), dataset = "bloodmnist", data_root, images, labels, prompts;
    std::vector<std::string> splits;  // not given: every split of the data
    std::optional<std::int64_t> limit;  // not given: every sample

    CLI::App* add_to(CLI::App& app) {
        auto* cmd = app.add_subcommand("build", "Encode prompts and images into a feature store (resumable)");
        cmd->fallthrough();  // `fstore build --log-level info` reaches the global option
        auto* run_text_flag =
            cmd->add_flag("--run-text", run_text, "run the text stage (neither --run-* given: both stages)");
        auto* run_image_flag = cmd->add_flag("--run-image", run_image, "run the image stage");
        cmd->add_flag("--skip-text", skip_text, "skip the text stage (the reference's spelling)")->excludes(run_text_flag);
        cmd->add_flag("--skip-image", skip_image, "skip the image stage")->excludes(run_image_flag);
        cmd->add_option("--h5,--output-path", h5, "store to create or resume")
            ->capture_default_str()
            ->check(fstore::cli::non_empty_path());
        model.add_to(*cmd);
        cmd->add_option("--dataset", dataset, "MedMNIST dataset name (file {name}[_{size}].npz)")->capture_default_str();
        fstore::cli::add_integer(*cmd, "--size,--image-size", o.size, "MedMNIST image size: 28, 64, 128 or 224", 28, 224);
        cmd->add_option("--data-root", data_root, "directory of the .npz files (default ~/.medmnist)")
            ->check(fstore::cli::non_empty_path());
        cmd->add_flag("--download", o.download, "download the .npz from MedMNIST's site if missing or not the official file (MD5-checked)");
        cmd->add_option("--images", images, "custom data: folder of images (with --labels)")
            ->check(fstore::cli::non_empty_path());
        cmd->add_option("--labels", labels, "custom data: CSV with columns path,label[,split]")
            ->check(fstore::cli::non_empty_path());
        cmd->add_flag("--strict", o.strict, "fail on the first unreadable image instead of skipping it");
        cmd->add_option("--prompts", prompts, "JSON with label_texts, label_templates, concept_texts, concept_templates")
            ->check(fstore::cli::non_empty_path());
        fstore::cli::add_comma_list(*cmd, "--splits", splits,
                                    "splits to encode, in order (default: train,val,test for MedMNIST; for "
                                    "--images, every split of the CSV, train/val/test first)");
        fstore::cli::add_integer(*cmd, "--batch-size", o.batch_size, "images per batch (one commit each)", 1);
        fstore::cli::add_integer(*cmd, "--loader-threads", o.loader_threads, "decode/preprocess threads (0 = auto)", 0,
                                 max_threads);
        // Absent means every sample: BuildOptions' -1 ("all") is not a value to type.
        fstore::cli::add_integer(*cmd, "--limit", limit, "encode only the first N samples of each split",
                                 std::int64_t{0});
        cmd->add_flag("--no-resume", no_resume,
                      "start afresh: the image stage discards ALL image rows on disk (every split, whatever "
                      "--splits says); the text stage drops templates of another model or prompt set");
        cmd->add_flag("--no-progress", no_progress, "no progress bar or progress lines");
        cmd->add_flag("--durable", o.durable, "fsync every commit (survives power loss; slower)");
        cmd->add_flag("--json", as_json, "print the final summary as one JSON object");
        return cmd;
    }

    int run(int argc, char** argv) {
        o.run_text = run_text || !run_image;
        o.run_image = run_image || !run_text;
        if (skip_text) o.run_text = false;
        if (skip_image) o.run_image = false;
        o.h5_path = h5;
        o.model_path = model.model;
        o.device = model.device;
        o.precision = model.precision;
        o.threads = model.threads;
        o.dataset = images.empty() || dataset != "bloodmnist" ? dataset : "";
        o.data_root = data_root;
        o.images_dir = images;
        o.labels_csv = labels;
        o.prompts_file = prompts;
        o.splits = splits;
        if (limit) o.limit = *limit;
        o.resume = !no_resume;
        if (const char* delay = std::getenv("FSTORE_TEST_STEP_DELAY_MS")) {
            o.step_delay = std::chrono::milliseconds(std::atoi(delay));
        }

        // Ctrl-C / SIGTERM / SIGHUP: stop after the batch in hand, commit it, exit 130.
        fstore::SignalWatcher signals;
        fstore::ProgressOptions po;
        po.style = no_progress ? fstore::ProgressStyle::none : fstore::ProgressStyle::automatic;
        fstore::Progress progress(po, stderr);
        const auto summary = fstore::run_build(o, &signals.stop_flag(), &progress);
        // The resume hint first: stdout may be a pipe whose reader is gone (SIGPIPE ends us).
        if (summary.interrupted) {
            std::fprintf(stderr, "fstore: interrupted; every committed batch is kept. Resume with:\n  %s\n",
                         fstore::resume_hint(std::vector<std::string>(argv, argv + argc)).c_str());
            std::fflush(stderr);
        }
        if (as_json) {
            std::cout << fstore::json_line(summary.to_json()) << '\n';
        } else {
            std::cout << summary.to_text();
        }
        std::cout.flush();
        return summary.interrupted ? static_cast<int>(fstore::ExitCode::interrupted) : 0;
    }
};

}  // namespace

// LibTorch mallocs its per-batch tensors (hundreds of MB with ConceptCLIP's 729×1152 tokens).
// glibc serves blocks that large with mmap and unmaps them on free, so every batch
// page-faults the same memory back in: with a cheap encoder that was most of `fstore build`'s
// time. Serving them from the heap and keeping freed memory there lets each batch reuse the
// last one's pages; peak RSS stays flat whatever the dataset size (bench/RESULTS.md).
static void keep_freed_memory_for_reuse() {
#ifdef __GLIBC__
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

int main(int argc, char** argv) {
    keep_freed_memory_for_reuse();
    CLI::App app{"fstore: encode images and prompts with a CLIP-family TorchScript model", "fstore"};
    fstore::cli::apply_conventions(app);
    app.require_subcommand(1);
    std::string log_level = "warn";
    app.add_option("--log-level", log_level, "trace | debug | info | warn | error | off")->capture_default_str();

    BuildArgs build_args;
    auto* build = build_args.add_to(app);

    ModelArgs embed_args;
    fstore::EmbedRequest request;
    std::optional<std::string> out;  // given but empty is an error, not "no --out"
    std::string dtype = "float32";
    bool embed_json = false;
    auto* emb = app.add_subcommand("embed", "Encode prompts and/or image files");
    emb->fallthrough();  // global options (--log-level) may follow the subcommand, as for build
    embed_args.add_to(*emb);
    // One prompt per --text: `--text a photo of a cell` unquoted would be five prompts.
    emb->add_option("--text", request.texts, "a prompt (repeat --text for more; encoded as one padded batch)")
        ->expected(1)
        ->allow_extra_args(false)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    emb->add_option("--image", request.image_paths, "image files (--image a.png b.png, or repeat --image)");
    emb->add_option("--out", out, "write input_ids, text_cls, text_tokens, image_cls, image_tokens to this .npz");
    emb->add_option("--dtype", dtype, "float32 | float16 output")->capture_default_str()
        ->check(CLI::IsMember({"float32", "float16"}));
    emb->add_flag("--json", embed_json, "print one JSON object: the output path and each array's shape and dtype");

    ModelArgs info_args;
    bool info_json = false;
    auto* info = app.add_subcommand("model-info", "Load and check a model archive; print its config and scalars");
    info->fallthrough();
    info_args.add_to(*info);
    info->add_flag("--json", info_json, "print one JSON object");

    fstore::cli::set_help_footers(app, {
        "fstore build --model models/conceptclip.pt --download           # BloodMNIST 224 px, both stages",
        "fstore build --run-text --prompts my_prompts.json --h5 features.h5",
        "fstore build --images cells/ --labels cells.csv --h5 cells.h5   # any image folder",
        "fstore build --device cuda --precision fp16 --batch-size 128",
        "fstore model-info --model models/tiny.pt --json",
        "fstore embed --model models/tiny.pt --text \"a bloodcell of platelet\" --image cell.png --out e.npz",
    }, R"(Exit codes: 0 ok, 2 bad arguments, 3 file not found, 4 bad format (npz, JSON, CSV, store),
5 store locked by another writer, 6 model archive problem, 7 dataset content problem,
8 resume refused (store built with another model/dataset/size/prompts), 9 download failed,
10 I/O error (disk full, store not writable: the store keeps its last commit), 70 internal error,
130 interrupted (the last whole batch is committed; rerun to resume).)");

    if (const auto exit_code = fstore::cli::parse(app, argc, argv, std::cout, std::cerr)) return *exit_code;
    // --json's failures are JSON too, except where stdout is the --out file.
    const bool json = (info->parsed() && info_json) || (build->parsed() && build_args.as_json) ||
                      (emb->parsed() && embed_json && !(out && fstore::npy::takes_stdout(*out, false)));
    return fstore::run_guarded([&] {
        fstore::configure_logging("fstore", log_level);
        if (info->parsed()) return model_info(info_args, info_json);
        if (build->parsed()) return build_args.run(argc, argv);
        request.type = dtype == "float16" ? fstore::OutputType::float16 : fstore::OutputType::float32;
        return embed(embed_args, request, out, embed_json);
    }, json);
}
