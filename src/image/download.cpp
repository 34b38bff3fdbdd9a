// Resumable, checksummed HTTP downloads with libcurl and OpenSSL's MD5.
#include "fstore/download.hpp"

#include <curl/curl.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

#include "fstore/datasets.hpp"
#include "fstore/digest.hpp"
#include "fstore/error.hpp"

namespace fstore {
namespace {

namespace fs = std::filesystem;

// MedMNIST v3 (Zenodo record 10519652). Other datasets: add their rows from medmnist's
// INFO table ("url_md5" / "MD5" per size).
const std::vector<MedmnistFile>& table() {
    static const std::vector<MedmnistFile> files = {
        {"bloodmnist", 28, "bloodmnist.npz", "7053d0359d879ad8a5505303e11de1dc"},
        {"bloodmnist", 64, "bloodmnist_64.npz", "2b94928a2ae4916078ca51e05b6b800b"},
        {"bloodmnist", 128, "bloodmnist_128.npz", "adace1e0ed228fccda1f39692059dd4c"},
        {"bloodmnist", 224, "bloodmnist_224.npz", "b718ff6835fcbdb22ba9eacccd7b2601"},
    };
    return files;
}

struct CurlFree {
    void operator()(CURL* c) const noexcept { curl_easy_cleanup(c); }
};
struct FileClose {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileClose>;

// Hashes a whole file into `md5`; returns its size.
std::uint64_t hash_file(const std::string& path, Digest& md5) {
    FilePtr f(std::fopen(path.c_str(), "rb"));
    if (!f) throw NotFoundError("cannot read '" + path + "': check that it exists and is readable");
    std::vector<char> buf(1 << 20);
    std::uint64_t total = 0;
    while (true) {
        const std::size_t n = std::fread(buf.data(), 1, buf.size(), f.get());
        if (n > 0) {
            md5.update(buf.data(), n);
            total += n;
        }
        if (n < buf.size()) {
            if (std::ferror(f.get())) throw NotFoundError("error reading '" + path + "': check the disk");
            break;
        }
    }
    return total;
}

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

struct Transfer {
    std::string part;
    FilePtr file;
    Digest* md5 = nullptr;
    CURL* curl = nullptr;
    std::uint64_t offset = 0;    // bytes already in the .part when this request started
    std::uint64_t received = 0;  // bytes written by this request
    std::uint64_t total = 0;     // expected final size, 0 while unknown
    bool started = false;
    bool cancelled = false;
    std::string failure;  // why a callback stopped the transfer
    const ProgressCallback* progress = nullptr;
    // From the last response's headers.
    long long range_start = -1;
    long long range_total = -1;
};

size_t on_header(char* data, size_t size, size_t n, void* user) {
    auto* t = static_cast<Transfer*>(user);
    const std::string line(data, size * n);
    if (line.rfind("HTTP/", 0) == 0) {
        t->range_start = t->range_total = -1;  // a new response (after a redirect)
    } else if (lower(line.substr(0, 14)) == "content-range:") {
        long long a = 0, b = 0, total = 0;
        if (std::sscanf(line.c_str() + 14, " bytes %lld-%lld/%lld", &a, &b, &total) == 3) {
            t->range_start = a;
            t->range_total = total;
        }
    }
    return size * n;
}

size_t on_write(char* data, size_t size, size_t n, void* user) {
    auto* t = static_cast<Transfer*>(user);
    const size_t bytes = size * n;
    if (!t->started) {
        t->started = true;
        long code = 0;
        curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
        curl_off_t length = -1;
        curl_easy_getinfo(t->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
        if (t->offset > 0 && code != 206) {
            // The server ignored the Range header: start over.
            t->file.reset(std::fopen(t->part.c_str(), "wb"));
            if (!t->file) {
                t->failure = "cannot rewrite '" + t->part + "'";
                return 0;
            }
            t->md5->reset();
            t->offset = 0;
        }
        if (code == 206 && t->range_start >= 0 && static_cast<std::uint64_t>(t->range_start) != t->offset) {
            t->failure = "server resumed at byte " + std::to_string(t->range_start) + " instead of " +
                         std::to_string(t->offset);
            return 0;
        }
        if (code == 206 && t->range_total > 0) {
            t->total = static_cast<std::uint64_t>(t->range_total);
        } else if (length >= 0) {
            t->total = t->offset + static_cast<std::uint64_t>(length);
        }
    }
    if (std::fwrite(data, 1, bytes, t->file.get()) != bytes) {
        t->failure = "cannot write '" + t->part + "' (disk full?)";
        return 0;
    }
    t->md5->update(data, bytes);
    t->received += bytes;
    return bytes;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    auto* t = static_cast<Transfer*>(user);
    if (t->progress != nullptr && *t->progress) {
        if (!(*t->progress)(t->offset + t->received, t->total)) {
            t->cancelled = true;
            return 1;
        }
    }
    return 0;
}

void sync_and_close(FilePtr& file, const std::string& path) {
    if (!file) return;
    bool ok = std::fflush(file.get()) == 0;
    ok = ::fsync(fileno(file.get())) == 0 && ok;
    ok = std::fclose(file.release()) == 0 && ok;
    if (!ok) throw NotFoundError("cannot write '" + path + "': check free disk space and permissions");
}

std::string url_base(const DownloadOptions& options) {
    std::string base = options.url_base;
    if (base.empty()) {
        const char* env = std::getenv("FSTORE_MEDMNIST_URL_BASE");
        base = env != nullptr && *env != '\0' ? env : medmnist_default_url_base;
    }
    while (!base.empty() && base.back() == '/') base.pop_back();
    return base;
}

}  // namespace

const std::vector<MedmnistFile>& medmnist_files() { return table(); }

const MedmnistFile& medmnist_file(const std::string& dataset, int size) {
    for (const auto& f : table()) {
        if (f.dataset == lower(dataset) && f.size == size) return f;
    }
    std::string known;
    for (const auto& f : table()) known += (known.empty() ? "" : ", ") + f.dataset + "@" + std::to_string(f.size);
    throw UsageError("no download known for MedMNIST '" + dataset + "' at size " + std::to_string(size) +
                     " (known: " + known + "): pick one of these or place the .npz under --data-root yourself");
}

std::string md5_file(const std::string& path) {
    Digest md5 = Digest::md5();
    hash_file(path, md5);
    return md5.hex();
}

std::uint64_t download_file(const std::string& url, const std::string& dest, const std::string& expected_md5,
                            const DownloadOptions& options) {
    const std::string part = dest + ".part";
    const fs::path parent = fs::path(dest).parent_path();
    std::error_code ec;
    if (!parent.empty()) fs::create_directories(parent, ec);

    Digest md5 = Digest::md5();
    Transfer t;
    t.part = part;
    t.md5 = &md5;
    t.progress = &options.progress;
    if (fs::exists(part, ec)) t.offset = hash_file(part, md5);
    t.file.reset(std::fopen(part.c_str(), t.offset > 0 ? "ab" : "wb"));
    if (!t.file) {
        throw NotFoundError("cannot create '" + part + "': check that the directory is writable");
    }

    std::unique_ptr<CURL, CurlFree> curl(curl_easy_init());
    if (!curl) throw InternalError("curl_easy_init failed");
    t.curl = curl.get();
    char errbuf[CURL_ERROR_SIZE] = {0};
    const std::string range = std::to_string(t.offset) + "-";
    CURL* c = curl.get();
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "fstore/0.1 (libcurl)");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, options.connect_timeout_s);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, options.stall_timeout_s);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    if (t.offset > 0) curl_easy_setopt(c, CURLOPT_RANGE, range.c_str());

    const CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    sync_and_close(t.file, part);

    const auto drop_part = [&] { fs::remove(part, ec); };
    if (rc != CURLE_OK) {
        if (t.cancelled) throw InterruptedError("download of '" + url + "' cancelled; run again to resume from '" + part + "'");
        if (rc == CURLE_HTTP_RETURNED_ERROR && code == 416 && t.offset > 0) {
            // Range past the end: the .part is probably complete already; the checks below decide.
            t.total = 0;
        } else if (rc == CURLE_HTTP_RETURNED_ERROR) {
            if (t.offset == 0) drop_part();
            throw NetworkError("download of '" + url + "' failed with HTTP " + std::to_string(code) +
                               ": check the URL (or FSTORE_MEDMNIST_URL_BASE) and try again later");
        } else {
            const std::string why = !t.failure.empty() ? t.failure : (errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
            if (fs::exists(part, ec) && fs::file_size(part, ec) == 0) drop_part();
            throw NetworkError("download of '" + url + "' failed (" + why +
                               "): check the network and run again; a partial download resumes from '" + part + "'");
        }
    }

    const std::uint64_t have = fs::file_size(part, ec);
    if (t.total > 0 && have != t.total) {
        if (have > t.total) drop_part();
        throw NetworkError("download of '" + url + "' is incomplete: " + std::to_string(have) + " of " +
                           std::to_string(t.total) + " bytes" +
                           (have < t.total ? "; run again to resume" : "; the partial file was deleted, run again"));
    }
    const std::string got = md5.hex();
    if (got != lower(expected_md5)) {
        drop_part();
        throw NetworkError("download of '" + url + "' has MD5 " + got + " but " + lower(expected_md5) +
                           " was expected: the partial file was deleted; run again, or check the URL");
    }
    fs::rename(part, dest, ec);
    if (ec) throw NotFoundError("cannot rename '" + part + "' to '" + dest + "': " + ec.message());
    // Make the rename itself durable.
    if (!parent.empty()) {
        const int dfd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            ::fsync(dfd);
            ::close(dfd);
        }
    }
    return t.received;
}

std::string download_medmnist(const std::string& dataset, int size, const std::string& root,
                              const DownloadOptions& options) {
    const MedmnistFile& file = medmnist_file(dataset, size);
    const fs::path dir = medmnist_root(root);
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (!fs::is_directory(dir, ec)) {
        throw NotFoundError("cannot create directory '" + dir.string() + "': pass a writable --data-root");
    }
    const std::string dest = (dir / file.file_name).string();
    if (fs::exists(dest, ec) && md5_file(dest) == file.md5) return dest;
    download_file(url_base(options) + "/" + file.file_name + "?download=1", dest, file.md5, options);
    return dest;
}

}  // namespace fstore
