// Image datasets, streamed in order.
//
// The image stage writes rows in a fixed order (splits in order, samples in dataset
// order) so that row i of the store is always the same sample and a resumed run can skip
// what is already written. An `ImageSource` yields exactly that order, a batch at a time,
// and never holds more than a batch of decoded pixels: BloodMNIST at 224 px is ~2.5 GB of
// uint8, far more than a reader should keep.
//
// Two sources:
//  - MedMNIST `.npz` files (numpy zip archives), read member by member with libzip.
//    Members are streamed through zip_fread (deflated or stored, zip64 or not), never
//    loaded whole. The .npy headers are validated up front so that a wrong file fails
//    before any row is written.
//  - A folder of images plus a CSV of `path,label[,split]`, decoded with OpenCV
//    (fstore/image_file.hpp; a build without OpenCV refuses folders).
//
// Batches never span splits (the reference batches each split separately), and resume is
// per split: at the start of each split, skip what is already written, then read on.
// Two ways to skip, because a folder source may leave out unreadable images:
//  - `skip_entries(n)` drops dataset entries (npz samples, CSV rows) without decoding
//    them: what a resume uses when it knows how many entries the rows on disk consumed
//    (the pipeline records that with every batch), and what moves past --limit;
//  - `skip(n)` drops n samples; a folder source decodes to find them, since only readable
//    images count (the fallback for stores that do not record their entries).
// For an npz both are the same (seek in stored members, decompress and discard in deflated
// ones).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace fstore {

// One decoded image with its metadata. Pixels are packed uint8 HWC, channels 1 (gray) or
// 3 (RGB): exactly what `Preprocessor::run` takes (as an ImageView).
struct Sample {
    std::int64_t label = -1;  // -1 when the dataset has none
    std::string split;
    int height = 0;
    int width = 0;
    int channels = 0;
    std::vector<std::uint8_t> pixels;
};

struct SplitInfo {
    std::string name;
    std::int64_t size = 0;  // samples (for a folder: rows of the CSV, before unreadable ones)
};

class ImageSource {
public:
    virtual ~ImageSource() = default;

    // The splits this source yields, in the order it yields them.
    virtual const std::vector<SplitInfo>& splits() const = 0;
    // Total samples over all splits (sum of splits()).
    std::int64_t size() const;
    // Samples consumed so far (read or skipped), from 0 to size().
    virtual std::int64_t position() const = 0;
    // The split the next sample belongs to; empty once the source is exhausted.
    virtual std::string current_split() const = 0;
    // Samples of current_split() consumed so far (0 at the start of each split).
    virtual std::int64_t position_in_split() const = 0;

    // Replaces `out` with up to n next samples of the current split, in order; `out`'s
    // elements and their pixel buffers are reused. Returns how many were read: fewer
    // than n at the end of a split (the next call continues with the next split), 0 only
    // once every split is exhausted.
    virtual std::size_t next_batch(std::size_t n, std::vector<Sample>& out) = 0;

    // Drops up to n next samples of the current split without keeping their pixels;
    // stops at the end of the split. Returns how many were dropped.
    virtual std::int64_t skip(std::int64_t n) = 0;

    // Entries consumed so far over all splits, readable or not (monotonic): for a folder
    // source the CSV rows consumed, unreadable images included; for an npz, position().
    // The entries of a split consumed so far are entry_position() minus its value at the
    // start of the split, which stays valid after the source has moved to the next split.
    virtual std::int64_t entry_position() const { return position(); }
    // Drops up to n next entries of the current split without decoding them; stops at the
    // end of the split and returns how many were dropped. A folder source neither opens
    // the files nor reports them through on_skip, and counts them in position() and
    // position_in_split() as if they were samples (it cannot tell without decoding).
    virtual std::int64_t skip_entries(std::int64_t n) { return skip(n); }

    // A digest of the content this source reads, which the pipeline records with the rows
    // so that resuming from other data is refused; empty when the source cannot tell
    // cheaply. A folder gives the SHA-256 of its labels CSV, of the bytes it parsed (the
    // images are not hashed). An npz hashes its member table — every member's name, size
    // and the CRC-32 the archive's writer computed over its bytes — from the zip's central
    // directory, without decompressing anything, so it tells apart two files of the same
    // name in milliseconds.
    virtual std::string fingerprint() const { return {}; }
};

// Default split order of the reference pipeline.
std::vector<std::string> default_splits();

// ---- MedMNIST .npz ------------------------------------------------------------------

struct MedmnistOptions {
    std::string name = "bloodmnist";  // lower case, as in MedMNIST's file names
    int size = 28;                    // 28 (file "{name}.npz"), 64, 128 or 224 ("{name}_{size}.npz")
    std::string root;                 // directory of the files; empty: ~/.medmnist
    std::vector<std::string> splits = default_splits();  // empty: default_splits()
    // Ctrl-C: once *stop is set, next_batch and skip return 0 without reading further, even
    // from inside a wait for a member's CRC check or a long skip (seconds on a 224 px file).
    const std::atomic<bool>* stop = nullptr;
};

// "{name}.npz" for size 28, "{name}_{size}.npz" otherwise (MedMNIST's naming).
std::string medmnist_file_name(const std::string& name, int size);
// `root` or, when empty, $HOME/.medmnist (MedMNIST's default cache).
std::string medmnist_root(const std::string& root);

// Opens {root}/{file} and validates the members of every requested split:
//  - missing file: NotFoundError (pass --download, or --data-root for another directory);
//  - not a zip, unreadable or bad .npy header (magic, version 1-3, dtype: images uint8,
//    labels any integer; C order; shape (N,H,W[,C]) / (N[,K])), member size inconsistent
//    with its header: FormatError naming file, member and problem;
//  - a missing `{split}_images.npy` / `{split}_labels.npy`: DataError listing the
//    members the file has; images and labels of different lengths: DataError;
//  - (open_medmnist only) images that are not size x size: DataError.
// While reading, a truncated or corrupt member (read error, CRC mismatch, short data)
// throws FormatError. Labels take the first column of (N, K) label arrays.
std::unique_ptr<ImageSource> open_medmnist(const MedmnistOptions& options);
// Same, for an explicit file path (splits empty: default_splits()).
std::unique_ptr<ImageSource> open_npz(const std::string& path,
                                      const std::vector<std::string>& splits = default_splits(),
                                      const std::atomic<bool>* stop = nullptr);

// ---- Image folder + CSV --------------------------------------------------------------

struct ImageFolderOptions {
    std::string images_dir;  // image paths in the CSV are relative to this (absolute ones kept)
    std::string labels_csv;  // header row with columns `path`, `label` and optionally `split`
    // Splits to yield, in this order; rows of other splits are left out. Empty: every
    // split of the CSV, train/val/test first, then others in order of first appearance.
    std::vector<std::string> splits;
    // false: an unreadable image is reported through on_skip and left out;
    // true: DataError on the first one.
    bool strict = false;
    std::function<void(const std::string& path, const std::string& reason)> on_skip;
};

// Parses the CSV (RFC 4180 quoting; empty label: -1; missing/empty split: "train") and
// returns a source that decodes images lazily (decode_image_file, fstore/image_file.hpp:
// 8-bit gray stays gray, RGB/RGBA become RGB, alpha dropped). A 16-bit image throws
// DataError (convert it to 8 bits). Errors: missing CSV or directory: NotFoundError; bad CSV
// (no header, missing column, bad quoting, non-integer label): FormatError with the line
// number; a build without OpenCV: UsageError.
std::unique_ptr<ImageSource> open_image_folder(const ImageFolderOptions& options);

}  // namespace fstore
