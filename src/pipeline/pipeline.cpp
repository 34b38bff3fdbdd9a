#include "fstore/pipeline.hpp"


#include <algorithm>
#include <chrono>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "bounded_queue.hpp"
#include "fstore/datasets.hpp"
#include "fstore/download.hpp"
#include "fstore/error.hpp"
#include "fstore/feature_store.hpp"
#include "fstore/model.hpp"
#include "fstore/preprocess.hpp"
#include "fstore/progress.hpp"
#include "fstore/prompts.hpp"
#include "fstore/tokenizer.hpp"

namespace fstore {
namespace fs = std::filesystem;

namespace {

// Root attributes that identify what a store's contents were computed from (documented in
// pipeline.hpp). The image rows and the templates each have their own: a text-only run with
// another model must not relabel the image rows.
constexpr const char* attr_image_model_name = "fstore_image_model_name";
constexpr const char* attr_image_model_sha = "fstore_image_model_sha256";
constexpr const char* attr_dataset = "fstore_dataset";
constexpr const char* attr_image_size = "fstore_image_size";
constexpr const char* attr_labels_sha = "fstore_labels_sha256";
constexpr const char* attr_image_precision = "fstore_image_precision";
constexpr const char* attr_images_dir = "fstore_images_dir";
constexpr const char* attr_source_entries = "fstore_source_entries";
constexpr const char* attr_npz_fingerprint = "fstore_npz_members_sha256";
constexpr const char* attr_text_model_name = "fstore_text_model_name";
constexpr const char* attr_text_model_sha = "fstore_text_model_sha256";
constexpr const char* attr_prompt_hash = "fstore_prompt_hash";
// The image-source attribute that does not apply to the other kind of source (recorded so
// that rows of an npz and of a folder are never mixed, whatever --dataset says).
constexpr const char* not_for_folder = "n/a (image folder)";
constexpr const char* not_for_npz = "n/a (MedMNIST npz)";

bool stopping(const std::atomic<bool>* stop) {
    return stop != nullptr && stop->load(std::memory_order_acquire);
}

void step_pause(std::chrono::milliseconds delay) {
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
}

std::string resolved_dataset_name(const BuildOptions& o) {
    if (!o.dataset.empty()) return o.dataset;
    return o.images_dir.empty() ? "bloodmnist" : "custom";
}

// ---- identity ---------------------------------------------------------------------------

struct IdentityEntry {
    const char* attribute;
    std::string value;
    const char* what;  // for messages: "model", "dataset", ...
};

std::optional<std::string> attribute_text(const FeatureStore& store, const char* name) {
    const auto value = store.attribute(name);
    if (!value) return std::nullopt;
    if (const auto* s = std::get_if<std::string>(&*value)) return *s;
    if (const auto* i = std::get_if<std::int64_t>(&*value)) return std::to_string(*i);
    return fmt::format("{}", std::get<double>(*value));
}

std::string short_value(const std::string& v) {
    // SHA-256 hex is long; 12 digits tell archives apart in a message.
    return v.size() == 64 ? v.substr(0, 12) + "..." : v;
}

// "what 'recorded', not 'wanted'" for each entry whose recorded value differs (an entry
// never recorded is not a difference: stores from other tools carry none).
std::vector<std::string> differences(const FeatureStore& store, const std::vector<IdentityEntry>& entries) {
    std::vector<std::string> out;
    for (const auto& e : entries) {
        const auto value = attribute_text(store, e.attribute);
        if (value && *value != e.value) {
            out.push_back(fmt::format("{} '{}', not '{}'", e.what, short_value(*value), short_value(e.value)));
        }
    }
    return out;
}

std::string joined(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
    return out;
}

// fstore_source_entries: {split: {"rows": R, "entries": E}}, E dataset entries (CSV rows,
// unreadable images included) consumed to write the R rows of that split on disk.
nlohmann::json source_entries(const FeatureStore& store) {
    try {
        if (auto json = store.json_attribute(attr_source_entries); json && json->is_object()) return *json;
    } catch (const FormatError&) {
        // Not JSON: treated as not recorded (resume then counts readable images).
    }
    return nlohmann::json::object();
}

// Entries consumed by the `rows` rows of `split` on disk, or -1 when not recorded for
// exactly these rows (older stores, other tools).
std::int64_t resumed_entries(const nlohmann::json& recorded_entries, const std::string& split, std::int64_t rows,
                             std::int64_t split_size) {
    if (rows == 0) return 0;
    const auto it = recorded_entries.find(split);
    if (it == recorded_entries.end() || !it->is_object()) return -1;
    const auto r = it->find("rows");
    const auto e = it->find("entries");
    if (r == it->end() || e == it->end() || !r->is_number_integer() || !e->is_number_integer()) return -1;
    const auto entries = e->get<std::int64_t>();
    if (r->get<std::int64_t>() != rows || entries < rows || entries > split_size) return -1;
    return entries;
}

// ---- stages' data -----------------------------------------------------------------------

// Preprocessed pixels of one batch (loader -> encoder).
struct PixelBatch {
    std::int64_t rows = 0;
    std::vector<float> pixels;  // rows x 3 x S x S
    std::vector<std::int64_t> labels;
    std::vector<std::string> splits;
    std::size_t segment = 0;  // index into the plan
    std::int64_t entries = 0;  // entries of the segment's split consumed through this batch
};

// Encoded features of one batch (encoder -> writer).
struct EncodedBatch {
    std::int64_t rows = 0;
    std::vector<std::uint16_t> cls;     // rows x D half bits
    std::vector<std::uint16_t> tokens;  // rows x T_img x D half bits
    std::vector<std::int64_t> labels;
    std::vector<std::string> splits;
    std::size_t segment = 0;
    std::int64_t entries = 0;
};

// What the image stage does with one split.
struct Segment {
    std::string split;
    std::int64_t size = 0;      // samples the source has for this split
    std::int64_t resumed = 0;   // rows already on disk
    std::int64_t resumed_entries = -1;  // dataset entries those rows consumed; -1: unknown
    std::int64_t expected = 0;  // rows wanted in the end (size, or --limit)
};

// The one place rows reach the store. A faster writer (parallel chunk compression) can
// replace this function without touching the stages around it.
void write_rows(FeatureStore& store, const EncodedBatch& batch) {
    RowBatch rows;
    rows.rows = batch.rows;
    rows.image_features = batch.cls.data();
    rows.image_token_features = batch.tokens.data();
    rows.labels = batch.labels.data();
    rows.splits = &batch.splits;
    store.append_batch(rows);  // one atomic commit (fsynced when the store was opened durable)
}

// Runs `work(i)` for i in [0, n) on up to `workers` threads (the calling thread included).
template <class Work>
void parallel_for(std::size_t n, std::size_t workers, Work&& work) {
    workers = std::max<std::size_t>(1, std::min(workers, n));
    if (workers == 1) {
        for (std::size_t i = 0; i < n; ++i) work(i, 0);
        return;
    }
    std::vector<std::thread> threads;
    std::vector<std::exception_ptr> errors(workers);
    threads.reserve(workers - 1);
    auto run = [&](std::size_t w) {
        try {
            for (std::size_t i = w; i < n; i += workers) work(i, w);
        } catch (...) {
            errors[w] = std::current_exception();
        }
    };
    for (std::size_t w = 1; w < workers; ++w) threads.emplace_back(run, w);
    run(0);
    for (auto& t : threads) t.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

// Joins a thread on scope exit, after running `on_exit` (which must make it finish).
class ThreadGuard {
public:
    ThreadGuard(std::thread& thread, std::function<void()> on_exit)
        : thread_(thread), on_exit_(std::move(on_exit)) {}
    ~ThreadGuard() {
        if (thread_.joinable()) {
            on_exit_();
            thread_.join();
        }
    }
    ThreadGuard(const ThreadGuard&) = delete;
    ThreadGuard& operator=(const ThreadGuard&) = delete;

private:
    std::thread& thread_;
    std::function<void()> on_exit_;
};

// ---- the run ----------------------------------------------------------------------------

class BuildRun {
public:
    BuildRun(const BuildOptions& options, const std::atomic<bool>* stop, Progress* progress)
        : o_(options), stop_(stop), progress_(progress) {}

    BuildSummary run();

private:
    void open_model();
    void open_store();
    // `source`: the image data when the image stage runs (null otherwise).
    void check_identity(const ImageSource* source);
    void write_prompt_attributes();
    void text_stage();
    void image_stage(std::unique_ptr<ImageSource> source);
    std::unique_ptr<ImageSource> open_source();
    void warn_left_out_splits(const ImageFolderOptions& folder);
    std::vector<Segment> plan(const ImageSource& source);

    void message(const std::string& line) {
        if (progress_ != nullptr) progress_->message(line);
    }

    // The stop flag is set: records the interruption (the caller then stops its work).
    bool stop_requested() {
        if (stopping(stop_)) summary_.interrupted = true;
        return summary_.interrupted;
    }

    const BuildOptions& o_;
    const std::atomic<bool>* stop_;
    Progress* progress_;

    std::optional<ClipModel> model_;
    std::unique_ptr<Tokenizer> tokenizer_;  // the text stage's, built with the model
    std::optional<FeatureStore> store_;
    std::optional<PromptSet> prompts_;
    BuildSummary summary_;
    // The stored templates were made by this model and prompt set (so whole, matching ones
    // need not be encoded again): set by check_identity.
    bool templates_reusable_ = false;
    std::string first_unreadable_;  // "'path': reason" of the first image skipped
    // What the image stage encodes, split by split: set by check_identity.
    std::vector<Segment> segments_;
};

BuildSummary BuildRun::run() {
    const auto started = std::chrono::steady_clock::now();
    validate_options(o_);
    if (o_.run_text) {
        prompts_ = o_.prompts_file.empty() ? bloodmnist_prompts() : load_prompt_set(o_.prompts_file);
    } else if (!o_.prompts_file.empty()) {
        spdlog::warn("--prompts {} is ignored: only the text stage reads it; add --run-text to encode its templates",
                     quoted(o_.prompts_file));
    }
    // Inputs before work: a missing model archive before a --download starts, the image
    // data (a missing or malformed .npz, CSV or folder) before the model loads, the store is
    // created and the text stage spends minutes.
    check_model_file(o_.model_path.string());
    std::unique_ptr<ImageSource> source;
    if (o_.run_image) source = open_source();
    open_model();
    summary_.store_path = o_.h5_path;
    // Ctrl-C while the model loaded: stop before the store is created or changed.
    if (!stop_requested()) {
        open_store();
        check_identity(source.get());
    }
    if (o_.run_text && !summary_.interrupted) text_stage();
    if (o_.run_image && !summary_.interrupted) {
        const auto image_started = std::chrono::steady_clock::now();
        image_stage(std::move(source));
        summary_.image_seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - image_started).count();
    }
    summary_.total_rows = store_ ? store_->rows() : -1;  // stopped before the store was opened
    summary_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return std::move(summary_);
}

void BuildRun::open_model() {
    ModelOptions mo;
    mo.device = o_.device;
    mo.precision = parse_precision(o_.precision);
    mo.threads = o_.threads;
    spdlog::info("loading model {}", o_.model_path.string());
    model_.emplace(ClipModel::load(o_.model_path.string(), mo));
    // The archive's tokenizer too, before the store is touched: a broken one found by the
    // text stage would come after --no-resume has discarded the store's rows.
    if (o_.run_text) tokenizer_ = make_model_tokenizer(model_->config());
    summary_.model_name = model_->config().name;
    summary_.device = model_->device();
    spdlog::info("model {}: D={}, T_img={}, image size {}, device {}", model_->config().name,
                 model_->config().embed_dim, model_->config().image_tokens,
                 model_->config().image_size, model_->device());
}

void BuildRun::open_store() {
    StoreLayout layout;
    layout.dim = model_->config().embed_dim;
    layout.image_tokens = model_->config().image_tokens;
    // open_or_create throws MismatchError itself when an existing store has another D/T_img.
    store_.emplace(FeatureStore::open_or_create(o_.h5_path, layout, o_.durable));
    spdlog::info("store {}: {} rows, {} templates", o_.h5_path.string(), store_->rows(),
                 store_->template_ids().size());
}

void BuildRun::check_identity(const ImageSource* source) {
    FeatureStore& store = *store_;
    const auto& cfg = model_->config();
    const std::int64_t rows = store.rows();
    const bool has_templates = !store.template_ids().empty();
    const bool folder = !o_.images_dir.empty();
    const std::string sha = model_->archive_sha256();

    const std::vector<IdentityEntry> image_model{{attr_image_model_name, cfg.name, "model"},
                                                 {attr_image_model_sha, sha, "model archive (SHA-256)"}};
    const std::vector<IdentityEntry> text_model{{attr_text_model_name, cfg.name, "model"},
                                                {attr_text_model_sha, sha, "model archive (SHA-256)"}};
    std::vector<IdentityEntry> image_identity, text_identity;
    const std::string data_file_what =
        (folder ? std::string(".npz") : medmnist_file_name(resolved_dataset_name(o_), o_.size)) + " members (SHA-256)";
    if (o_.run_image) {
        image_identity = image_model;
        image_identity.push_back({attr_dataset, resolved_dataset_name(o_), "dataset"});
        image_identity.push_back({attr_image_size, folder ? not_for_folder : std::to_string(o_.size), "image size"});
        image_identity.push_back({attr_labels_sha, folder ? source->fingerprint() : not_for_npz,
                                  "labels CSV (SHA-256)"});
        image_identity.push_back({attr_npz_fingerprint, folder ? not_for_folder : source->fingerprint(),
                                  data_file_what.c_str()});
        // fp16/bf16 inference moves features by more than the store's half-float rounding:
        // one store, one precision.
        image_identity.push_back({attr_image_precision, o_.precision, "precision"});
    }
    if (o_.run_text) {
        text_identity = text_model;
        text_identity.push_back({attr_prompt_hash, prompt_set_hash(*prompts_), "prompt set"});
    }

    // Content this run adds to must match its inputs; content it leaves alone must at least
    // come from the same model, or the store would pair features of two models.
    const auto image_diffs = rows > 0 ? differences(store, o_.run_image ? image_identity : image_model)
                                      : std::vector<std::string>();
    const auto text_diffs = has_templates ? differences(store, o_.run_text ? text_identity : text_model)
                                          : std::vector<std::string>();
    if (o_.resume && (!image_diffs.empty() || !text_diffs.empty())) {
        std::string list;
        if (!image_diffs.empty()) list = "image rows made with " + joined(image_diffs);
        if (!text_diffs.empty()) list += (list.empty() ? "" : "; ") + std::string("templates made with ") + joined(text_diffs);
        // The fix names the stage that differs: --no-resume alone would re-encode good rows too.
        const std::string fix = image_diffs.empty()
                                    ? "pass --run-text --no-resume to re-encode only the templates (the image rows "
                                      "are kept), or write to another --h5 path"
                                : text_diffs.empty() && o_.run_text && has_templates
                                    ? "pass --run-image --no-resume to re-encode only the image rows (the "
                                      "templates are kept), or write to another --h5 path"
                                    : "pass --no-resume to rebuild it with these inputs, or write to another --h5 path";
        throw MismatchError("store " + quoted(o_.h5_path) + " holds " + list + ": " + fix);
    }
    if (o_.run_image && rows > 0 && !attribute_text(store, attr_image_model_sha)) {
        spdlog::warn("store {} records no model identity (written by another tool?): resuming it "
                     "assumes the same model, dataset and size", o_.h5_path.string());
    }
    // A folder is known by its labels CSV: the images beside it are not hashed (that would
    // mean reading them all). Another folder with the same CSV is worth a word, not a refusal:
    // the same images moved elsewhere are the common case.
    const std::string images_dir = folder ? fs::weakly_canonical(o_.images_dir).string() : not_for_npz;
    if (o_.run_image && o_.resume && rows > 0 && folder) {
        const auto recorded = attribute_text(store, attr_images_dir);
        if (recorded && *recorded != images_dir) {
            spdlog::warn("the {} image rows of {} were read from images in '{}'; this run reads '{}' with the same "
                         "labels CSV: if those are other images, rerun with --no-resume",
                         rows, o_.h5_path.string(), *recorded, images_dir);
        }
    }

    // Every refusal before the first write: the resume plan's too (rows that no sample of
    // this dataset accounts for), and a Ctrl-C during the checks (hashing a multi-GB archive
    // takes seconds) leaves the store as it was, rows --no-resume would discard included.
    if (o_.run_image && o_.resume) segments_ = plan(*source);
    if (stop_requested()) return;

    if (o_.run_image) {
        // The image identity describes the rows on disk: here they match it (or never recorded
        // one), or there are none, or --no-resume is about to discard them all.
        for (const auto& e : image_identity) store.set_attribute(e.attribute, e.value);
        store.set_attribute(attr_images_dir, images_dir);
        if (rows == 0 || !o_.resume) store.set_json_attribute(attr_source_entries, nlohmann::json::object());
        if (rows > 0 && !o_.resume) {
            spdlog::warn("--no-resume: discarding all {} image rows of {} (every split, whatever --splits says)",
                         rows, o_.h5_path.string());
            store.truncate_rows(0);  // one commit with the attributes above
        }
    } else if (!image_diffs.empty()) {
        spdlog::warn("the {} image rows of {} were encoded by another model ({}); rerun with --run-image "
                     "--no-resume to re-encode them", rows, o_.h5_path.string(), joined(image_diffs));
    }
    templates_reusable_ = o_.resume && has_templates && text_diffs.empty() &&
                          attribute_text(store, attr_text_model_sha).has_value();
    if (o_.run_text) {
        // Templates are written whole by the text stage; the ones of another model or prompt
        // set go first so that no template of theirs outlives the identity rewritten here.
        // Prompt-set templates that record no identity (the reference's) may be of any model
        // or prompt set: they go too, or those the new set does not rewrite would pass for
        // its own. Groups under other names are someone's own: kept.
        std::vector<std::string> prompt_templates;
        for (const auto& id : store.template_ids())
            if (is_prompt_template_id(id)) prompt_templates.push_back(id);
        const bool unrecorded = !prompt_templates.empty() && !attribute_text(store, attr_text_model_sha);
        // Prompt-set ids this set does not write (another tool wrote them under this store's
        // identity, e.g. the reference with another prompt set, which leaves the identity
        // attributes as they were): they would pass for this set's templates.
        std::set<std::string> own_ids;
        for (const auto& t : expand_templates(*prompts_)) own_ids.insert(t.id);
        std::vector<std::string> stale;
        for (const auto& id : prompt_templates)
            if (!own_ids.count(id)) stale.push_back(id);
        for (const auto& e : text_identity) store.set_attribute(e.attribute, e.value);
        // The vocabulary and logit scalars in the same commit as the identity: templates an
        // interrupted text stage leaves are always the ones these attributes describe.
        write_prompt_attributes();
        if (!text_diffs.empty()) {
            spdlog::info("--no-resume: dropping the template groups of another model or prompt set");
            store.remove_templates(prompt_templates);
        } else if (unrecorded) {
            spdlog::warn("store {} holds {} concept/label prompt templates that record no model or prompt set "
                         "(written by another tool?): replacing them with this model's and prompt set's",
                         o_.h5_path.string(), prompt_templates.size());
            store.remove_templates(prompt_templates);
        } else if (!stale.empty()) {
            spdlog::warn("store {} holds {} prompt template groups this prompt set does not write ({}{}): removing them",
                         o_.h5_path.string(), stale.size(), stale.front(), stale.size() > 1 ? ", ..." : "");
            store.remove_templates(stale);
        }
    } else if (!text_diffs.empty()) {
        spdlog::warn("the templates of {} were encoded by another model ({}); rerun with --run-text "
                     "--no-resume to re-encode them", o_.h5_path.string(), joined(text_diffs));
    }
    // The reference's extra metadata: the dataset name as a JSON string.
    if (o_.run_image || !store.attribute("dataset")) {
        store.set_json_attribute("dataset", resolved_dataset_name(o_));
    }
    store.commit();
    if (o_.run_image && !o_.resume) segments_ = plan(*source);  // of the store just emptied
}

// ---- text stage -------------------------------------------------------------------------

// A stored template group holds exactly `t`'s texts, whole: every dataset present with
// agreeing shapes, the texts themselves equal (write_template commits a group at once; a
// group damaged or edited since is encoded again).
bool stored_template_matches(const FeatureStore& store, const TemplateTexts& t) {
    if (!store.has_template(t.id)) return false;
    try {
        const TemplateInfo info = store.template_info(t.id);
        return info.complete && info.rows == static_cast<std::int64_t>(t.texts.size()) &&
               info.texts_hash == texts_hash(t.texts) && store.template_texts(t.id) == t.texts;
    } catch (const FormatError&) {
        return false;  // not a whole template group: encoding it again replaces it
    }
}

void BuildRun::text_stage() {
    FeatureStore& store = *store_;
    const auto templates = expand_templates(*prompts_);
    spdlog::info("text stage: {} templates", templates.size());
    if (progress_ != nullptr) progress_->begin("text", static_cast<std::int64_t>(templates.size()), 0, "tpl");
    for (const auto& t : templates) {
        if (stop_requested()) break;
        if (templates_reusable_ && stored_template_matches(store, t)) {
            spdlog::debug("text: template {} is up to date", t.id);
            ++summary_.templates_kept;
            summary_.templates.emplace_back(t.id, static_cast<std::int64_t>(t.texts.size()));
            if (progress_ != nullptr) progress_->skip(1);  // not in the rate: nothing was encoded
            continue;
        }
        step_pause(o_.step_delay);
        spdlog::debug("text: encoding template {}", t.id);
        const TokenBatch ids = tokenizer_->encode_batch(t.texts);
        Embeddings e = model_->encode_texts(ids.input_ids.data(), ids.batch, ids.length, OutputType::float32);
        TemplateRecord record;
        record.texts = t.texts;
        record.text_features = std::move(e.cls_f32);
        record.text_token_features = std::move(e.tokens_f32);
        record.text_tokens = e.tokens;
        store.write_template(t.id, record);
        spdlog::debug("text: template {} committed", t.id);
        summary_.templates.emplace_back(t.id, static_cast<std::int64_t>(t.texts.size()));
        if (progress_ != nullptr) progress_->advance(1);
    }
    if (progress_ != nullptr) progress_->end();
    if (summary_.templates_kept > 0) {
        spdlog::info("text: kept {} templates stored earlier by this model and prompt set (--no-resume re-encodes them)",
                     summary_.templates_kept);
    }
}

// Prompt vocabulary (Python json.dumps formatting, as the reference writes it) and the
// model's logit scalars as float64; committed by the caller.
void BuildRun::write_prompt_attributes() {
    FeatureStore& store = *store_;
    for (const auto& [name, value] : prompt_attributes(*prompts_)) store.set_attribute(name, value);
    const auto& s = model_->logit_scalars();
    const std::pair<const char*, const std::optional<double>*> scalars[] = {
        {"logit_scale", &s.logit_scale},
        {"logit_bias", &s.logit_bias},
        {"concept_logit_scale", &s.concept_logit_scale},
        {"concept_logit_bias", &s.concept_logit_bias},
    };
    for (const auto& [name, value] : scalars) {
        if (*value) store.set_attribute(name, **value);
    }
}

// ---- image stage ------------------------------------------------------------------------

std::unique_ptr<ImageSource> BuildRun::open_source() {
    if (!o_.images_dir.empty()) {
        ImageFolderOptions fo;
        fo.images_dir = o_.images_dir.string();
        fo.labels_csv = o_.labels_csv.string();
        fo.splits = o_.splits;  // empty: every split of the CSV
        fo.strict = o_.strict;
        fo.on_skip = [this](const std::string& path, const std::string& reason) {
            if (summary_.skipped_images == 0) first_unreadable_ = "'" + path + "': " + reason;
            ++summary_.skipped_images;
            spdlog::warn("skipping unreadable image '{}': {}", path, reason);
        };
        auto folder = open_image_folder(fo);  // first: a --splits name the CSV lacks is an error, not a warning
        if (!o_.splits.empty()) warn_left_out_splits(fo);
        return folder;
    }
    const std::string name = resolved_dataset_name(o_);
    if (o_.download) {
        DownloadOptions dl;
        // Ctrl-C cancels a download (InterruptedError, exit 130); the .part file resumes it.
        dl.progress = [this](std::uint64_t, std::uint64_t) { return !stopping(stop_); };
        spdlog::info("making sure {} is present in {}", medmnist_file_name(name, o_.size),
                     medmnist_root(o_.data_root.string()));
        download_medmnist(name, o_.size, o_.data_root.string(), dl);
    }
    MedmnistOptions mo;
    mo.name = name;
    mo.size = o_.size;
    mo.root = o_.data_root.string();
    mo.splits = o_.splits;
    mo.stop = stop_;
    return open_medmnist(mo);
}

// --splits given for a folder: one warning counting the CSV rows of the splits it leaves
// out (the CSV is parsed a second time, without the split filter; it is small).
void BuildRun::warn_left_out_splits(const ImageFolderOptions& folder) {
    ImageFolderOptions every = folder;
    every.splits.clear();
    const auto all = open_image_folder(every);
    std::int64_t total = 0;
    std::string list;
    for (const auto& info : all->splits()) {
        if (std::find(o_.splits.begin(), o_.splits.end(), info.name) != o_.splits.end()) continue;
        total += info.size;
        list += fmt::format("{}{}: {}", list.empty() ? "" : ", ", info.name, info.size);
    }
    if (total == 0) return;
    std::string asked;
    for (const auto& s : o_.splits) asked += (asked.empty() ? "" : ",") + s;
    spdlog::warn("--splits {} leaves out {} CSV rows of other splits ({}): name them in --splits, or leave "
                 "--splits out to encode every split", asked, total, list);
}

std::vector<Segment> BuildRun::plan(const ImageSource& source) {
    const auto on_disk = store_->split_counts_from_data();
    // A lost /split comes back as missing_split (the reference's repair). Unless the source
    // has a split of that name (a CSV may), nothing says which samples those rows are:
    // resuming would append every one of them again next to them.
    const auto& splits = source.splits();
    const bool source_has_missing_split = std::any_of(
        splits.begin(), splits.end(), [](const SplitInfo& info) { return info.name == missing_split; });
    if (const auto lost = on_disk.find(missing_split); lost != on_disk.end() && !source_has_missing_split) {
        throw MismatchError(fmt::format(
            "store {} holds {} rows whose split is '{}' (its /split dataset was lost and "
            "repaired): a resume cannot tell which samples they are and would append them again; pass "
            "--no-resume to re-encode the image rows, or write to another --h5 path",
            quoted(o_.h5_path), lost->second, missing_split));
    }
    const auto entries = source_entries(*store_);
    std::vector<Segment> segments;
    for (const auto& info : source.splits()) {
        Segment seg;
        seg.split = info.name;
        seg.size = info.size;
        seg.expected = o_.limit >= 0 ? std::min(o_.limit, info.size) : info.size;
        const auto it = on_disk.find(info.name);
        seg.resumed = it == on_disk.end() ? 0 : it->second;
        if (seg.resumed > info.size) {
            throw MismatchError(fmt::format(
                "store {} holds {} '{}' rows but the dataset has only {}: pass --no-resume to rebuild it, "
                "or write to another --h5 path", quoted(o_.h5_path), seg.resumed, info.name, info.size));
        }
        seg.resumed_entries = resumed_entries(entries, info.name, seg.resumed, info.size);
        segments.push_back(seg);
    }
    for (const auto& [name, count] : on_disk) {
        const bool planned = std::any_of(segments.begin(), segments.end(),
                                         [&](const Segment& s) { return s.split == name; });
        if (!planned) spdlog::info("store keeps {} rows of split '{}' (not part of this run)", count, name);
    }
    return segments;
}

void BuildRun::image_stage(std::unique_ptr<ImageSource> source) {
    if (stop_requested()) return;
    const std::vector<Segment>& segments = segments_;
    const std::int64_t rows_before = store_->rows();
    const auto& cfg = model_->config();
    const std::int64_t dim = cfg.embed_dim;
    const std::int64_t tokens = cfg.image_tokens;
    const PreprocessConfig pc = model_preprocess_config(cfg);
    const std::size_t image_floats = 3 * static_cast<std::size_t>(pc.image_size) * pc.image_size;

    for (const auto& seg : segments) {
        summary_.splits.push_back({seg.split, seg.resumed, 0, seg.expected});
        spdlog::info("split {}: {} samples, {} on disk, {} to encode", seg.split, seg.size, seg.resumed,
                     std::max<std::int64_t>(seg.expected - seg.resumed, 0));
    }

    std::size_t workers = o_.loader_threads > 0 ? static_cast<std::size_t>(o_.loader_threads)
                                                : std::clamp<std::size_t>(std::thread::hardware_concurrency() / 2, 1, 8);
    const auto batch_size = static_cast<std::size_t>(o_.batch_size);

    // Stage queues: a couple of batches each way, so memory stays flat. Spare buffers come
    // back through the recycle queues to avoid re-faulting ~100 MB per batch.
    detail::BoundedQueue<PixelBatch> pixel_queue(2);
    detail::BoundedQueue<std::vector<float>> pixel_spares(3);
    detail::BoundedQueue<EncodedBatch> encoded_queue(1);
    detail::BoundedQueue<EncodedBatch> encoded_spares(2);
    std::atomic<bool> cancel_loader{false};
    std::exception_ptr loader_error, writer_error;

    // Loader: walks the splits in order; per split skips what is already on disk, reads up
    // to `expected`, and moves past the rest (beyond --limit) without decoding it.
    std::atomic<bool> loader_finished{false};  // the source ran to its end
    std::atomic<bool> batches_dropped{false};  // the encoder stopped with batches left
    const auto stage_started = std::chrono::steady_clock::now();
    std::thread loader([&] {
        try {
            std::vector<Preprocessor> preprocessors;
            for (std::size_t w = 0; w < workers; ++w) preprocessors.emplace_back(pc);
            std::vector<Sample> samples;
            std::size_t seg_index = 0;
            const auto halted = [&] { return cancel_loader.load() || stopping(stop_); };
            while (!halted() && !source->current_split().empty()) {
                const std::string split = source->current_split();
                while (seg_index < segments.size() && segments[seg_index].split != split) ++seg_index;
                if (seg_index == segments.size()) {
                    throw InternalError("dataset yielded split '" + split + "' that was not planned");
                }
                const Segment& seg = segments[seg_index];
                const std::int64_t split_start = source->entry_position();
                std::int64_t done = 0;  // samples of this split on disk or queued
                if (seg.resumed_entries >= 0) {
                    // The entries the rows on disk consumed, unreadable images included:
                    // skipped without decoding, whatever became readable since.
                    source->skip_entries(seg.resumed_entries);
                    done = seg.resumed;
                } else if (seg.resumed > 0) {
                    done = source->skip(seg.resumed);  // not recorded: count readable samples
                }
                std::int64_t queued_entries = source->entry_position() - split_start;
                while (!halted() && source->current_split() == split && done < seg.expected) {
                    const auto want = static_cast<std::size_t>(
                        std::min<std::int64_t>(static_cast<std::int64_t>(batch_size), seg.expected - done));
                    const std::size_t got = source->next_batch(want, samples);
                    const std::int64_t entries = source->entry_position() - split_start;
                    if (got == 0) {
                        // Only unreadable images were left: their entries go on record in a
                        // batch of no rows, as they would have in a bigger batch, so that a
                        // resume skips them whatever --batch-size was.
                        if (entries > queued_entries) {
                            PixelBatch tail;
                            tail.segment = seg_index;
                            tail.entries = entries;
                            if (!pixel_queue.push(std::move(tail))) return;
                        }
                        break;
                    }
                    done += static_cast<std::int64_t>(got);
                    queued_entries = entries;
                    PixelBatch batch;
                    batch.rows = static_cast<std::int64_t>(got);
                    batch.segment = seg_index;
                    batch.entries = entries;
                    if (auto spare = pixel_spares.try_pop()) batch.pixels = std::move(*spare);
                    batch.pixels.resize(got * image_floats);
                    batch.labels.resize(got);
                    batch.splits.assign(got, split);
                    parallel_for(got, workers, [&](std::size_t i, std::size_t w) {
                        const Sample& s = samples[i];
                        preprocessors[w].run(ImageView{s.pixels.data(), s.height, s.width, s.channels},
                                             batch.pixels.data() + i * image_floats);
                        batch.labels[i] = s.label;
                    });
                    if (!pixel_queue.push(std::move(batch))) return;
                }
                // Past --limit (or the end): move on to the next split.
                if (source->current_split() == split && !halted()) {
                    source->skip_entries(std::numeric_limits<std::int64_t>::max());
                }
            }
            if (source->current_split().empty()) loader_finished.store(true);
        } catch (...) {
            loader_error = std::current_exception();
        }
        pixel_queue.close();
    });
    ThreadGuard loader_guard(loader, [&] {
        cancel_loader.store(true);
        pixel_queue.close();
    });

    // Writer: appends encoded batches in order and reports progress.
    std::vector<std::int64_t> appended(segments.size(), 0);
    nlohmann::json entries_record = source_entries(*store_);
    std::thread writer([&] {
        std::optional<std::size_t> phase;
        std::int64_t entries_shown = 0;  // of the phase's split, on the progress bar
        // A split's bar starts with its first batch written; its time from the previous
        // split's last commit (the first: the stage's start), so that batch's time counts in
        // the rate.
        auto last_commit = stage_started;
        try {
            while (auto batch = encoded_queue.pop()) {
                if (phase != batch->segment) {
                    // The loader moved on: the split before is done, unreadable tail included.
                    if (progress_ != nullptr && phase) progress_->end(true);
                    const Segment& seg = segments[batch->segment];
                    entries_shown = seg.resumed_entries >= 0 ? seg.resumed_entries : seg.resumed;
                    if (progress_ != nullptr)
                        progress_->begin(seg.split, seg.expected, std::min(entries_shown, seg.expected), "img",
                                         last_commit);
                    phase = batch->segment;
                }
                spdlog::debug("image: committing rows {}..{} ({})", store_->rows(),
                              store_->rows() + batch->rows - 1, segments[batch->segment].split);
                // What the split's rows consumed of the dataset, committed with the rows.
                const Segment& seg = segments[batch->segment];
                entries_record[seg.split] = {{"rows", seg.resumed + appended[batch->segment] + batch->rows},
                                             {"entries", batch->entries}};
                store_->set_json_attribute(attr_source_entries, entries_record);
                if (batch->rows > 0) {
                    write_rows(*store_, *batch);
                } else {
                    store_->commit();  // entries of unreadable images only
                }
                last_commit = std::chrono::steady_clock::now();
                spdlog::debug("image: committed, store holds {} rows", store_->rows());
                appended[batch->segment] += batch->rows;
                // Entries, not rows: unreadable images skipped are work done too, so a folder
                // with some of them still ends its bar at 100%.
                if (progress_ != nullptr) progress_->advance(std::max(batch->rows, batch->entries - entries_shown));
                entries_shown = std::max(entries_shown + batch->rows, batch->entries);
                encoded_spares.try_push(std::move(*batch));
            }
        } catch (...) {
            writer_error = std::current_exception();
            encoded_queue.close();
        }
        // The source ran to its end and every batch was written: the last split is done.
        if (progress_ != nullptr)
            progress_->end(!writer_error && loader_finished.load() && !batches_dropped.load());
    });
    ThreadGuard writer_guard(writer, [&] { encoded_queue.close(); });

    // Encoder: this thread. Polls the stop flag between batches.
    std::exception_ptr encoder_error;
    try {
        for (;;) {
            // Stopped: an interruption only if work is left (a stop during the last batch
            // ends a finished run); that is decided once the queue is closed, below.
            if (stopping(stop_)) break;
            auto pixels = pixel_queue.pop();
            if (!pixels) break;
            step_pause(o_.step_delay);
            spdlog::debug("image: encoding {} rows of {}", pixels->rows, segments[pixels->segment].split);
            EncodedBatch encoded;
            if (auto spare = encoded_spares.try_pop()) encoded = std::move(*spare);
            encoded.rows = pixels->rows;
            encoded.segment = pixels->segment;
            encoded.entries = pixels->entries;
            encoded.cls.resize(static_cast<std::size_t>(pixels->rows * dim));
            encoded.tokens.resize(static_cast<std::size_t>(pixels->rows * tokens * dim));
            EmbeddingTarget target;
            target.type = OutputType::float16;
            target.cls = encoded.cls.data();
            target.tokens = encoded.tokens.data();
            if (pixels->rows > 0) model_->encode_images(pixels->pixels.data(), pixels->rows, target);
            encoded.labels = std::move(pixels->labels);
            encoded.splits = std::move(pixels->splits);
            pixel_spares.try_push(std::move(pixels->pixels));
            if (!encoded_queue.push(std::move(encoded))) break;  // the writer failed
        }
    } catch (...) {
        encoder_error = std::current_exception();
    }

    // Shut down: stop the loader, let the writer finish what was encoded (those batches are
    // complete and worth keeping), then report the first error.
    cancel_loader.store(true);
    pixel_queue.close();  // no push succeeds after this: what clear() drops is all that is left
    if (pixel_queue.clear() > 0) batches_dropped.store(true);
    loader.join();
    encoded_queue.close();
    writer.join();
    // The loader polls the stop flag too: a queue it closed early is an interruption.
    if (stopping(stop_) && (!loader_finished.load() || batches_dropped.load())) summary_.interrupted = true;

    for (std::size_t i = 0; i < segments.size(); ++i) {
        summary_.splits[i].appended = appended[i];
        summary_.total_new += appended[i];
    }
    if (writer_error) std::rethrow_exception(writer_error);
    if (encoder_error) std::rethrow_exception(encoder_error);
    if (loader_error) std::rethrow_exception(loader_error);
    // Images found but none readable, in an empty store, is a wrong --images folder or CSV,
    // not a success a script should take for one. (Unreadable images at the end of a
    // dataset that is otherwise stored are only warnings: a resume must not get stuck.)
    if (!summary_.interrupted && summary_.skipped_images > 0 && summary_.total_new == 0 && rows_before == 0) {
        throw DataError(fmt::format("none of the {} images this run tried could be read (first {}): check that "
                                    "--images is the folder the paths in --labels are relative to",
                                    summary_.skipped_images, first_unreadable_));
    }
    // An npz yields every sample its headers announce, so fewer rows mean the file changed
    // under us. (A folder's missing rows are its unreadable images, reported one by one.)
    for (const auto& s : summary_.splits) {
        if (!summary_.interrupted && o_.images_dir.empty() && s.resumed + s.appended < s.expected) {
            spdlog::warn("split {}: {} of {} samples written", s.name, s.resumed + s.appended, s.expected);
        }
    }
}

std::string shell_quote(const std::string& arg) {
    if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                              "0123456789_-+=/.,:@%") == std::string::npos) {
        return arg;
    }
    std::string out = "'";
    for (char c : arg) {
        if (c == '\'') out += "'\\''";
        else out += c;
    }
    return out + "'";
}

}  // namespace

void validate_options(const BuildOptions& o) {
    if (!o.run_text && !o.run_image) {
        throw UsageError("nothing to do: both stages are skipped; drop --skip-text or --skip-image");
    }
    if (o.batch_size < 1) {
        throw UsageError("--batch-size " + std::to_string(o.batch_size) + " is invalid: use 1 or more");
    }
    if (o.limit < -1) throw UsageError("--limit must be 0 or more");
    if (o.threads < 0) throw UsageError("--threads must be 0 (all cores) or more");
    if (o.h5_path.empty()) throw UsageError("--h5 needs a file path");
    if (o.images_dir.empty() != o.labels_csv.empty()) {
        throw UsageError("--images and --labels go together: pass both (a folder and its path,label[,split] CSV)");
    }
    const bool folder = !o.images_dir.empty();
    if (folder && o.download) {
        throw UsageError("--download fetches MedMNIST files; it cannot be combined with --images/--labels");
    }
    if (!folder && o.run_image) {
        const int sizes[] = {28, 64, 128, 224};
        if (std::find(std::begin(sizes), std::end(sizes), o.size) == std::end(sizes)) {
            throw UsageError("--size " + std::to_string(o.size) + " is not a MedMNIST size: use 28, 64, 128 or 224");
        }
    }
    std::set<std::string> seen;
    for (const auto& s : o.splits) {
        if (s.empty()) throw UsageError("--splits has an empty name: use e.g. train,val,test");
        if (!seen.insert(s).second) throw UsageError("--splits names '" + s + "' twice: name each split once");
        if (!folder && s != "train" && s != "val" && s != "test") {
            throw UsageError("--splits: MedMNIST has no split '" + s + "': use train, val and/or test");
        }
    }
    if (o.precision != "fp32" && o.precision != "fp16" && o.precision != "bf16") {
        throw UsageError("--precision '" + o.precision + "' is unknown: use fp32, fp16 or bf16");
    }
}

nlohmann::json BuildSummary::to_json() const {
    nlohmann::json j;
    j["store"] = store_path.string();
    j["model"] = model_name;
    j["device"] = device;
    nlohmann::json tpl = nlohmann::json::array();
    for (const auto& [id, k] : templates) tpl.push_back({{"id", id}, {"texts", k}});
    j["templates"] = tpl;
    j["templates_kept"] = templates_kept;
    nlohmann::json splits_json = nlohmann::json::array();
    for (const auto& s : splits) {
        splits_json.push_back({{"split", s.name}, {"resumed", s.resumed}, {"appended", s.appended},
                               {"expected", s.expected}});
    }
    j["splits"] = splits_json;
    j["total_new"] = total_new;
    j["total_rows"] = total_rows >= 0 ? nlohmann::json(total_rows) : nlohmann::json();  // null: not opened
    j["skipped_images"] = skipped_images;
    j["interrupted"] = interrupted;
    j["seconds"] = seconds;
    j["image_seconds"] = image_seconds;
    // Throughput of the image stage alone (model loading and the text stage excluded).
    j["images_per_second"] = image_seconds > 0 ? static_cast<double>(total_new) / image_seconds : 0.0;
    return j;
}

std::string BuildSummary::to_text() const {
    std::string out;
    if (!templates.empty()) {
        out += fmt::format("Stored {} templates in {}", templates.size(), store_path.string());
        out += templates_kept > 0 ? fmt::format(" ({} kept from an earlier run):\n", templates_kept) : ":\n";
        for (const auto& [id, k] : templates) out += fmt::format("  {}: {} texts\n", id, k);
    }
    if (!splits.empty()) {
        out += "Samples appended per split:\n";
        for (const auto& s : splits) {
            out += fmt::format("  {}: {} new", s.name, s.appended);
            if (s.resumed > 0) out += fmt::format(" (resumed after {} on disk)", s.resumed);
            out += fmt::format(", {} total\n", s.resumed + s.appended);
        }
        out += fmt::format("Total new samples: {} (store holds {} rows)\n", total_new, total_rows);
    }
    if (skipped_images > 0) out += fmt::format("Skipped unreadable images: {}\n", skipped_images);
    return out;  // an interruption is the caller's to report (fstore: on stderr, with the resume command)
}

BuildSummary run_build(const BuildOptions& options, const std::atomic<bool>* stop, Progress* progress) {
    BuildRun run(options, stop, progress);
    return run.run();
}

std::string resume_hint(const std::vector<std::string>& argv) {
    // Rerunning with --no-resume would start over: leave it out.
    std::string out;
    for (const auto& arg : argv) {
        if (arg == "--no-resume") continue;
        out += (out.empty() ? "" : " ") + shell_quote(arg);
    }
    return out;
}

}  // namespace fstore
