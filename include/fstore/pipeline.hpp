// The build pipeline behind `fstore build`: prompts and images in, a feature store out.
//
// It ports the reference writer (docs: reference-store.md, "Writer behaviour"):
//   text stage   for each prompt template (concept templates, then label templates):
//                tokenize its texts, encode_text -> CLS (K,D) + tokens (K,T_txt,D), write
//                templates/<id>; then the prompt attributes (label_texts, concept_texts,
//                prompt_temp_for_*) and the model's four logit scalars as float64.
//   image stage  splits in the order asked (default: every split of the data), samples in
//                dataset order, batches of `batch_size`: encode_image -> CLS + tokens as half
//                floats, appended with ids = row number, label (-1 when missing), split name.
//
// Better than the reference:
//   - Templates already stored by the same model (archive SHA-256) and prompt set, whole
//     and with the same texts, are kept instead of encoded again (the reference re-encodes
//     every template on every run); --no-resume re-encodes them all.
//   - Fail fast. The image data is opened (downloaded, headers and CSV checked) before the
//     model loads and the store is created, so a wrong path costs no text stage. A run
//     whose images were all unreadable throws DataError instead of reporting success.
//   - Crash-safe resume. The rows on disk are the truth: per split, the run skips what the
//     rows already written for that split consumed, and appends the rest. Every batch is
//     one atomic commit of the store's rollback journal, so a kill at any moment (SIGKILL
//     included) leaves the last complete batch and the next run continues from there: same
//     rows, ids 0..N-1, no duplicates, no gaps. With each batch the store records, in the
//     same commit, how many dataset entries each split's rows consumed (a folder's CSV rows,
//     unreadable images included); resume skips that many entries without decoding them, so
//     an image that was unreadable and is fixed since cannot shift the rows. (It stays left
//     out; --no-resume re-reads it.) Stores that lack the record resume by counting
//     readable images.
//   - Identity checks. Root attributes record what the contents were computed from, the
//     image rows and the templates separately (all strings):
//       image rows  fstore_image_model_name, fstore_image_model_sha256 (SHA-256 of the
//                   archive), fstore_dataset, fstore_image_size (MedMNIST size, or
//                   "n/a (image folder)"), fstore_labels_sha256 (SHA-256 of the labels CSV,
//                   or "n/a (MedMNIST npz)"), fstore_npz_members_sha256 (the npz's
//                   `ImageSource::fingerprint`: its members' names, sizes and CRC-32s; or
//                   "n/a (image folder)"), and fstore_source_entries: JSON
//                   {split: {"rows": R, "entries": E}}, the E dataset entries that the R
//                   rows of the split consumed (updated in each batch's commit);
//       templates   fstore_text_model_name, fstore_text_model_sha256, fstore_prompt_hash.
//     The image identity is checked before image rows are appended, and rewritten only when
//     the image datasets start empty (new store, or --no-resume); the text identity is
//     checked when templates exist and rewritten by each text run (templates it keeps
//     match it; the others it writes again). A run also refuses a store whose other part (templates for an image
//     run, image rows for a text run) came from another model. Any difference throws
//     MismatchError naming it, unless `resume` is false (--no-resume): the image stage then
//     discards ALL image rows, of every split, whatever `splits` says (a warning gives the
//     count), and the text stage drops template groups of another model or prompt set; a
//     stage that does not run leaves its part alone, with a warning when it came from
//     another model. A store written by another tool (the Python reference) records no
//     identity: resuming it assumes the same inputs, with a warning.
//   - Interruption: `stop` is polled between batches (and between templates; the loader
//     polls it too, so it stops reading ahead). When it is set the run finishes the batch
//     in hand, commits it and returns a summary with `interrupted` = true; rerunning the
//     same command resumes.
//   - Overlap: a loader thread reads and preprocesses (on `loader_threads` workers) while
//     the model encodes, and a writer thread appends while the next batch encodes. Queues
//     between the stages are bounded (a couple of batches), so memory stays flat whatever
//     the dataset size.
//
// Only the model module touches LibTorch; this one hands it float pixel buffers.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace fstore {

class Progress;

// Every flag of `fstore build`, already parsed. Defaults are the CLI's defaults.
struct BuildOptions {
    bool run_text = true;   // the CLI: neither --run-text nor --run-image given = both
    bool run_image = true;

    std::filesystem::path h5_path = "conceptclip_features.h5";  // --h5 / --output-path
    std::filesystem::path model_path = "models/conceptclip.pt";  // --model

    // Data: a MedMNIST .npz by name and size, or a folder of images + CSV.
    std::string dataset;                // --dataset; empty: "bloodmnist" (npz) / "custom" (folder)
    int size = 224;                     // --size: 28, 64, 128 or 224 (MedMNIST file variant)
    std::filesystem::path data_root;    // --data-root; empty: ~/.medmnist
    bool download = false;              // --download: fetch a missing/partial npz first
    std::filesystem::path images_dir;   // --images (custom folder)
    std::filesystem::path labels_csv;   // --labels path,label[,split]
    bool strict = false;                // --strict: an unreadable image fails the run

    std::filesystem::path prompts_file;  // --prompts FILE.json; empty: BloodMNIST defaults
    // --splits, in write order. Empty: every split of the data: train, val, test for
    // MedMNIST; for a folder, those of the CSV, train/val/test first, then the others in
    // order of first appearance. Given for a folder, rows of other splits are left out,
    // with one warning counting them.
    std::vector<std::string> splits;
    std::int64_t limit = -1;            // --limit N: first N samples per split; < 0: all

    int batch_size = 64;                // --batch-size
    std::string device = "auto";        // --device: auto | cpu | cuda | cuda:N
    std::string precision = "fp32";     // --precision: fp32 | fp16 | bf16
    int threads = 0;                    // --threads: LibTorch intra-op threads (0 = cores)
    int loader_threads = 0;             // decode/preprocess workers (0 = from the core count)

    bool resume = true;                 // false: --no-resume (image stage: discards ALL rows)
    bool durable = false;               // --durable: fsync at every commit (power-loss safe)

    // Test hook (env FSTORE_TEST_STEP_DELAY_MS of the CLI): sleep this long before each
    // template and each batch so that a kill harness can hit every phase. 0 in normal use.
    std::chrono::milliseconds step_delay{0};
};

// Checks option values that do not need any file (sizes, batch size, split names, the
// text/image/folder combinations). Throws UsageError naming the flag and the fix.
void validate_options(const BuildOptions& options);

// What a run did; printed at the end like the reference prints it, or as JSON (--json).
struct BuildSummary {
    std::filesystem::path store_path;
    std::string model_name;
    std::string device;
    // Templates of this run's prompt set, in write order, with their row counts (K): the
    // ones encoded now and the ones kept (already stored by the same model and prompts).
    std::vector<std::pair<std::string, std::int64_t>> templates;
    std::int64_t templates_kept = 0;
    // Per split in write order: rows found on disk at start (resumed), rows appended now.
    struct SplitResult {
        std::string name;
        std::int64_t resumed = 0;
        std::int64_t appended = 0;
        std::int64_t expected = 0;  // samples of the split this run aims at (after --limit)
    };
    std::vector<SplitResult> splits;
    std::int64_t total_new = 0;     // rows appended in this run
    std::int64_t total_rows = 0;    // rows in the store at the end; -1: stopped before opening it
    std::int64_t skipped_images = 0;  // unreadable images left out (custom folder)
    bool interrupted = false;       // stopped early by the stop flag
    double seconds = 0.0;        // the whole run, model loading included
    double image_seconds = 0.0;  // the image stage: reading, encoding and writing the rows

    nlohmann::json to_json() const;
    // Multi-line human summary (stored templates with counts, samples appended per split,
    // total new samples), ending with a newline. Says nothing of `interrupted`: the caller
    // reports that, with how to resume.
    std::string to_text() const;
};

// Runs the stages `options` asks for. `stop` may be null (never interrupted); `progress`
// may be null (no progress output). Throws the fstore::Error subclasses: UsageError,
// NotFoundError (model with an export hint, npz with a --download hint), FormatError,
// DataError, ModelError, MismatchError, LockedError, NetworkError.
BuildSummary run_build(const BuildOptions& options, const std::atomic<bool>* stop = nullptr,
                       Progress* progress = nullptr);

// The command that resumes an interrupted run: `fstore build` with the same arguments.
// Used for the "interrupted; resume with: ..." hint.
std::string resume_hint(const std::vector<std::string>& argv);

}  // namespace fstore
