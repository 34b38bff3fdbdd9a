// Checked, resumable downloads of MedMNIST files.
//
// MedMNIST publishes its .npz files on Zenodo with an MD5 per file. A download goes to
// `<file>.part`; an interrupted one resumes from there with an HTTP Range request. The
// received length is checked against the server's Content-Length and the whole file
// against the MD5 before `<file>.part` is renamed to `<file>` (atomic on one file system),
// so `<file>` only ever exists complete and verified. A checksum mismatch deletes the
// `.part` (its bytes cannot be trusted for a resume).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace fstore {

// One downloadable file of a MedMNIST dataset.
struct MedmnistFile {
    std::string dataset;    // "bloodmnist"
    int size = 28;          // image side: 28, 64, 128 or 224
    std::string file_name;  // "bloodmnist_64.npz" (medmnist_file_name)
    std::string md5;        // lower-case hex
};

// The files we know checksums for (MedMNIST v3's table; add rows for more datasets in
// download.cpp). Throws UsageError naming the known datasets/sizes for anything else.
const MedmnistFile& medmnist_file(const std::string& dataset, int size);
const std::vector<MedmnistFile>& medmnist_files();

// Where MedMNIST v3 files live; "{base}/{file_name}?download=1" is fetched.
inline constexpr const char* medmnist_default_url_base = "https://zenodo.org/records/10519652/files";

// bytes_done, bytes_total (0 while unknown). Return false to cancel (InterruptedError).
using ProgressCallback = std::function<bool(std::uint64_t, std::uint64_t)>;

struct DownloadOptions {
    // Base URL for MedMNIST files. Empty: $FSTORE_MEDMNIST_URL_BASE if set, else
    // medmnist_default_url_base (tests point it at a local server).
    std::string url_base;
    ProgressCallback progress;
    long connect_timeout_s = 30;
    // Abort when fewer than 1 byte/s arrives for this long (a stalled connection).
    long stall_timeout_s = 60;
};

// Downloads `url` to `dest`, checking MD5 (hex, any case). Resumes from `dest + ".part"`
// when present. Errors: HTTP/transport failure, short transfer (the .part is kept; run
// again to resume), size or MD5 mismatch (the .part is deleted): NetworkError; cannot
// write the destination: NotFoundError. Returns the number of bytes fetched this time.
std::uint64_t download_file(const std::string& url, const std::string& dest,
                            const std::string& expected_md5, const DownloadOptions& options = {});

// Makes `{root}/{medmnist_file_name(dataset, size)}` present and verified (root empty:
// ~/.medmnist, created if needed). An existing file with the right MD5 is kept; one with
// a wrong MD5 is downloaded again. Returns the file's path.
std::string download_medmnist(const std::string& dataset, int size, const std::string& root,
                              const DownloadOptions& options = {});

// Lower-case hex MD5 of a file (OpenSSL EVP). Throws NotFoundError if it cannot be read.
std::string md5_file(const std::string& path);

}  // namespace fstore
