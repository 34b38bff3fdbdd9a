// MedMNIST .npz reader: streams `{split}_images.npy` members with libzip, one batch at a
// time. Labels (a few bytes per sample) are read whole when their split starts.
#include <zip.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <optional>
#include <thread>
#include <utility>

#include "fstore/datasets.hpp"
#include "fstore/digest.hpp"
#include "fstore/error.hpp"

namespace fstore {

std::vector<std::string> default_splits() { return {"train", "val", "test"}; }

std::int64_t ImageSource::size() const {
    std::int64_t n = 0;
    for (const auto& s : splits()) n += s.size;
    return n;
}

std::string medmnist_file_name(const std::string& name, int size) {
    if (size == 28) return name + ".npz";
    return name + "_" + std::to_string(size) + ".npz";
}

std::string medmnist_root(const std::string& root) {
    if (!root.empty()) return root;
    const char* home = std::getenv("HOME");
    return (std::filesystem::path(home != nullptr && *home != '\0' ? home : ".") / ".medmnist")
        .string();
}

namespace {

namespace fs = std::filesystem;

struct ZipCloser {
    void operator()(zip_t* z) const noexcept { zip_discard(z); }
};
struct ZipFileCloser {
    void operator()(zip_file_t* f) const noexcept { zip_fclose(f); }
};
using ZipPtr = std::unique_ptr<zip_t, ZipCloser>;
using ZipFilePtr = std::unique_ptr<zip_file_t, ZipFileCloser>;

// What a .npy header says.
struct NpyHeader {
    char byte_order = '|';  // '<', '>', '|' or '='
    char kind = 'u';        // 'u', 'i', 'b', 'f', ...
    int itemsize = 1;
    std::string descr;
    bool fortran_order = false;
    std::vector<std::int64_t> shape;
    std::uint64_t header_bytes = 0;  // magic + lengths + dict: where the data starts
    std::uint64_t data_bytes = 0;    // itemsize times every dimension, below 2^63
};

std::string shape_text(const std::vector<std::int64_t>& shape) {
    std::string text = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
    return text + (shape.size() == 1 ? ",)" : ")");
}

// Parses the Python dict literal of a .npy header:
// {'descr': '<i8', 'fortran_order': False, 'shape': (3, 1), }
class DictParser {
public:
    DictParser(const std::string& text, std::string where) : s_(text), where_(std::move(where)) {}

    NpyHeader parse() {
        NpyHeader h;
        bool have_descr = false, have_order = false, have_shape = false;
        expect('{');
        while (true) {
            ws();
            if (peek() == '}') break;
            const std::string key = string_lit();
            expect(':');
            ws();
            if (key == "descr") {
                if (peek() != '\'' && peek() != '"') fail("descr is not a simple dtype string (structured arrays are not supported)");
                h.descr = string_lit();
                have_descr = true;
            } else if (key == "fortran_order") {
                h.fortran_order = boolean();
                have_order = true;
            } else if (key == "shape") {
                h.shape = tuple();
                have_shape = true;
            } else {
                fail("unexpected key '" + key + "'");
            }
            ws();
            if (peek() == ',') {
                ++i_;
                continue;
            }
            ws();
            if (peek() == '}') break;
            fail("expected ',' or '}'");
        }
        ++i_;  // the '}'
        ws();
        if (i_ != s_.size()) fail("text after the closing '}'");
        if (!have_descr || !have_order || !have_shape) fail("missing descr, fortran_order or shape");
        const std::string& d = h.descr;
        if (d.size() < 3 || std::string("<>|=").find(d[0]) == std::string::npos) {
            fail("unsupported dtype '" + d + "'");
        }
        h.byte_order = d[0];
        h.kind = d[1];
        try {
            std::size_t used = 0;
            h.itemsize = std::stoi(d.substr(2), &used);
            if (used != d.size() - 2) throw std::invalid_argument(d);
        } catch (const std::exception&) {
            fail("unsupported dtype '" + d + "'");
        }
        // A product past 2^63 (a crafted shape) would wrap around and pass the size checks.
        std::uint64_t bytes = h.itemsize > 0 ? static_cast<std::uint64_t>(h.itemsize) : 1;
        for (const auto dim : h.shape) {
            if (dim != 0 && bytes > (std::uint64_t{1} << 63) / static_cast<std::uint64_t>(dim)) {
                fail("shape " + shape_text(h.shape) + " describes more than 2^63 bytes");
            }
            bytes *= static_cast<std::uint64_t>(dim);
        }
        h.data_bytes = h.itemsize > 0 ? bytes : 0;
        return h;
    }

private:
    [[noreturn]] void fail(const std::string& what) const {
        throw FormatError(where_ + ": bad .npy header (" + what +
                          "): the file is not a numpy .npz as MedMNIST writes it; re-download it");
    }
    char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
    void ws() {
        // Python's whitespace, as ast.literal_eval (numpy's header parser) takes it.
        while (i_ < s_.size() && std::strchr(" \t\n\r\f\v", s_[i_]) != nullptr && s_[i_] != '\0') ++i_;
    }
    void expect(char c) {
        ws();
        if (peek() != c) fail(std::string("expected '") + c + "'");
        ++i_;
    }
    std::string string_lit() {
        ws();
        const char q = peek();
        if (q != '\'' && q != '"') fail("expected a string");
        const auto end = s_.find(q, i_ + 1);
        if (end == std::string::npos) fail("unterminated string");
        std::string out = s_.substr(i_ + 1, end - i_ - 1);
        i_ = end + 1;
        return out;
    }
    bool boolean() {
        if (s_.compare(i_, 4, "True") == 0) {
            i_ += 4;
            return true;
        }
        if (s_.compare(i_, 5, "False") == 0) {
            i_ += 5;
            return false;
        }
        fail("fortran_order is not True or False");
    }
    // A Python tuple of integers: "()", "(7,)", "(7, 28)" or "(7, 28,)"; "(7)" is an int.
    std::vector<std::int64_t> tuple() {
        expect('(');
        std::vector<std::int64_t> out;
        bool comma = false;  // after the last element
        while (true) {
            ws();
            if (peek() == ')') {
                ++i_;
                if (out.size() == 1 && !comma) fail("shape (" + std::to_string(out[0]) + ") is not a tuple");
                return out;
            }
            if (!out.empty() && !comma) fail("expected ',' or ')' in the shape");
            if (!std::isdigit(static_cast<unsigned char>(peek()))) fail("bad shape");
            std::int64_t v = 0;
            while (std::isdigit(static_cast<unsigned char>(peek()))) {
                v = v * 10 + (s_[i_++] - '0');
                if (v > (std::int64_t{1} << 48)) fail("shape too large");
            }
            if (peek() == 'L') ++i_;  // Python 2 longs
            out.push_back(v);
            ws();
            comma = peek() == ',';
            if (comma) ++i_;
        }
    }

    const std::string& s_;
    std::string where_;
    std::size_t i_ = 0;
};

// One member opened for sequential reading, with errors mapped to FormatError.
class Member {
public:
    Member(zip_t* zip, zip_uint64_t index, std::string where)
        : where_(std::move(where)), file_(zip_fopen_index(zip, index, 0)) {
        if (!file_) {
            zip_error_t* error = zip_get_error(zip);
            if (zip_error_code_zip(error) == ZIP_ER_COMPNOTSUPP || zip_error_code_zip(error) == ZIP_ER_ENCRNOTSUPP) {
                throw FormatError(where_ + ": cannot open member (" + zip_error_strerror(error) +
                                  "): re-save the arrays with numpy.savez or numpy.savez_compressed");
            }
            throw FormatError(where_ + ": cannot open member (" + zip_error_strerror(error) +
                              "): the .npz is corrupt; re-download it");
        }
        // Only stored, unencrypted members can seek (a failed zip_fseek also poisons the
        // file handle, so never try on the others).
        zip_stat_t st;
        zip_stat_init(&st);
        if (zip_stat_index(zip, index, 0, &st) == 0) {
            if ((st.valid & ZIP_STAT_COMP_METHOD) != 0 && (st.valid & ZIP_STAT_ENCRYPTION_METHOD) != 0) {
                seekable_ = st.comp_method == ZIP_CM_STORE && st.encryption_method == ZIP_EM_NONE;
            }
            if ((st.valid & ZIP_STAT_SIZE) != 0) declared_size_ = st.size;
        }
    }

    void read_exact(void* buf, std::uint64_t n) {
        auto* p = static_cast<std::uint8_t*>(buf);
        while (n > 0) {
            const zip_int64_t got = zip_fread(file_.get(), p, n);
            if (got < 0) corrupt(zip_file_strerror(file_.get()));
            if (got == 0) corrupt("member data ends early");
            p += got;
            n -= static_cast<std::uint64_t>(got);
            offset_ += static_cast<std::uint64_t>(got);
        }
    }

    // Skips n bytes: seeks when the member is stored, otherwise decompresses and discards.
    void skip(std::uint64_t n, std::vector<std::uint8_t>& scratch) {
        if (n == 0) return;
        if (seekable_ && zip_fseek(file_.get(), static_cast<zip_int64_t>(n), SEEK_CUR) == 0) {
            offset_ += n;
            seeked_ = true;
            return;
        }
        constexpr std::uint64_t chunk = 1 << 20;
        if (scratch.size() < chunk) scratch.resize(chunk);
        while (n > 0) {
            const auto step = std::min(n, chunk);
            read_exact(scratch.data(), step);
            n -= step;
        }
    }

    // Reads the rest of the member and lets libzip compare its CRC (a stored member is read
    // too, not seeked over, so that every byte is checked), and checks that the data is as
    // long as the zip entry declares: libzip checks only the CRC, and a crafted entry can
    // declare a size its data does not have. Returns early, unchecked, once `stop` is set.
    void check_rest(const std::atomic<bool>& stop) {
        constexpr std::size_t chunk = 1 << 20;
        std::vector<std::uint8_t> scratch(chunk);
        while (!stop.load(std::memory_order_relaxed)) {
            const zip_int64_t got = zip_fread(file_.get(), scratch.data(), chunk);
            if (got < 0) corrupt(zip_file_strerror(file_.get()));
            offset_ += static_cast<std::uint64_t>(got);
            if (got == 0) {
                if (declared_size_ && offset_ != *declared_size_) {
                    corrupt("member data is " + std::to_string(offset_) + " bytes, not the " +
                            std::to_string(*declared_size_) + " its zip entry declares");
                }
                return;
            }
        }
    }

    // At the end of the array data: reads what follows it, as numpy ignores it, to its end,
    // where libzip compares the CRC (only meaningful when every byte went through zip_fread).
    void finish() {
        if (seeked_) return;
        std::uint8_t extra[4096];
        while (true) {
            const zip_int64_t got = zip_fread(file_.get(), extra, sizeof extra);
            if (got < 0) corrupt(zip_file_strerror(file_.get()));
            if (got == 0) return;
            offset_ += static_cast<std::uint64_t>(got);
            if (declared_size_ && offset_ > *declared_size_) {
                corrupt("member holds more data than its zip entry declares");
            }
        }
    }

    NpyHeader read_header() {
        std::uint8_t pre[10];
        read_exact(pre, 10);
        static const std::uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
        if (std::memcmp(pre, magic, 6) != 0) bad("no .npy magic (\\x93NUMPY)");
        const int major = pre[6];
        if (major < 1 || major > 3 || pre[7] != 0) {
            bad(".npy version " + std::to_string(major) + "." + std::to_string(pre[7]) + " (expected 1.0, 2.0 or 3.0)");
        }
        std::uint64_t len = 0;
        std::uint64_t pre_len = 10;
        if (major == 1) {
            len = pre[8] | (static_cast<std::uint32_t>(pre[9]) << 8);
        } else {
            std::uint8_t more[2];
            read_exact(more, 2);
            pre_len = 12;
            len = pre[8] | (static_cast<std::uint32_t>(pre[9]) << 8) |
                  (static_cast<std::uint32_t>(more[0]) << 16) | (static_cast<std::uint32_t>(more[1]) << 24);
        }
        if (len > (1u << 20)) bad("header length " + std::to_string(len) + " is implausible");
        std::string dict(len, '\0');
        read_exact(dict.data(), len);
        NpyHeader h = DictParser(dict, where_).parse();
        h.header_bytes = pre_len + len;
        return h;
    }

    [[noreturn]] void corrupt(const std::string& what) const {
        throw FormatError(where_ + ": truncated or corrupt data (" + what + "): re-download the file");
    }
    [[noreturn]] void bad(const std::string& what) const {
        throw FormatError(where_ + ": bad .npy header (" + what +
                          "): the file is not a numpy .npz as MedMNIST writes it; re-download it");
    }

private:
    std::string where_;
    ZipFilePtr file_;
    std::uint64_t offset_ = 0;
    std::optional<std::uint64_t> declared_size_;  // the zip entry's uncompressed size
    bool seeked_ = false;
    bool seekable_ = false;
};

// Reads each split's images member once, in split order, on a thread of its own with its
// own libzip handle, and lets libzip check its CRC. NpzSource hands out no sample of a member
// before its check passed: rows encoded from corrupt pixels would be committed long before
// the member's end, and a resume could not tell them apart (a corrupt copy has the same
// member table). Running ahead overlaps the check with loading the model, the text stage and
// the encoding of the splits before it. MedMNIST's own loader (np.load) reads members whole.
bool is_set(const std::atomic<bool>* flag) { return flag != nullptr && flag->load(std::memory_order_relaxed); }

class MemberChecker {
public:
    struct Target {
        zip_uint64_t index;
        std::string where;
    };

    MemberChecker(std::string path, std::vector<Target> targets)
        : path_(std::move(path)), targets_(std::move(targets)), errors_(targets_.size()) {
        thread_ = std::thread([this] { run(); });
    }
    MemberChecker(const MemberChecker&) = delete;
    MemberChecker& operator=(const MemberChecker&) = delete;
    ~MemberChecker() {
        stop_ = true;
        thread_.join();
    }

    // Blocks until target i is checked; throws its FormatError if the check failed.
    // Returns false, unchecked, once *stop is set (polled: a signal handler cannot notify).
    bool wait(std::size_t i, const std::atomic<bool>* stop) {
        std::unique_lock<std::mutex> lock(mutex_);
        const auto checked = [&] { return done_ > i; };
        while (!done_changed_.wait_for(lock, std::chrono::milliseconds(50), checked)) {
            if (is_set(stop)) return false;
        }
        if (errors_[i]) std::rethrow_exception(errors_[i]);
        return true;
    }

private:
    void run() {
        std::exception_ptr failure;  // set when the archive does not open: every target fails
        ZipPtr zip;
        int err = 0;
        zip.reset(zip_open(path_.c_str(), ZIP_RDONLY, &err));
        if (!zip) {
            failure = std::make_exception_ptr(FormatError("'" + path_ + "' could not be opened again to check it (libzip error " +
                                                          std::to_string(err) + "): check that it is not being replaced"));
        }
        for (std::size_t i = 0; i < targets_.size() && !stop_; ++i) {
            std::exception_ptr error = failure;
            if (!error) {
                try {
                    Member(zip.get(), targets_[i].index, targets_[i].where).check_rest(stop_);
                } catch (...) {
                    error = std::current_exception();
                }
            }
            std::lock_guard<std::mutex> lock(mutex_);
            errors_[i] = error;
            ++done_;
            done_changed_.notify_all();
        }
    }

    const std::string path_;
    const std::vector<Target> targets_;
    std::atomic<bool> stop_{false};
    std::mutex mutex_;
    std::condition_variable done_changed_;
    std::size_t done_ = 0;
    std::vector<std::exception_ptr> errors_;
    std::thread thread_;  // last: starts after everything it uses exists
};

struct SplitMembers {
    std::string name;
    std::string images_member, labels_member;  // "{name}_images.npy" (or without ".npy")
    zip_uint64_t images_index = 0, labels_index = 0;
    NpyHeader images, labels;
    std::int64_t count = 0;
    int height = 0, width = 0, channels = 0;
};

std::int64_t decode_label(const std::uint8_t* p, const NpyHeader& h) {
    std::uint8_t b[8] = {};
    std::memcpy(b, p, h.itemsize);
    if (h.byte_order == '>') std::reverse(b, b + h.itemsize);
    const bool is_signed = h.kind == 'i';
    switch (h.itemsize) {
        case 1: return is_signed ? static_cast<std::int8_t>(b[0]) : b[0];
        case 2: {
            std::uint16_t v;
            std::memcpy(&v, b, 2);
            return is_signed ? static_cast<std::int16_t>(v) : v;
        }
        case 4: {
            std::uint32_t v;
            std::memcpy(&v, b, 4);
            return is_signed ? static_cast<std::int32_t>(v) : static_cast<std::int64_t>(v);
        }
        default: {
            std::uint64_t v;
            std::memcpy(&v, b, 8);
            return static_cast<std::int64_t>(v);  // uint64 labels above 2^63 do not occur
        }
    }
}

class NpzSource final : public ImageSource {
public:
    // image_size > 0: every split's images must be image_size x image_size (a MedMNIST file
    // named for one size holds images of that size).
    NpzSource(const std::string& path, std::vector<std::string> splits, int image_size = 0,
              const std::atomic<bool>* stop = nullptr)
        : path_(path), image_size_(image_size), stop_(stop) {
        if (splits.empty()) splits = default_splits();
        std::error_code ec;
        if (!fs::exists(path, ec)) {
            if (ec == std::errc::permission_denied) {
                throw NotFoundError("MedMNIST file '" + path + "' is not readable (permission denied): "
                                    "check the permissions of it and its directories");
            }
            throw NotFoundError("MedMNIST file '" + path +
                                "' not found: pass --download to fetch it, or --data-root to read it from another directory");
        }
        if (!fs::is_regular_file(path, ec)) {
            throw NotFoundError("MedMNIST file '" + path + "' is " +
                                (fs::is_directory(path, ec) ? "a directory" : "not a regular file (a FIFO or device)") +
                                ": pass --data-root the directory that holds the .npz file");
        }
        int err = 0;
        zip_.reset(zip_open(path.c_str(), ZIP_RDONLY, &err));
        if (!zip_) {
            zip_error_t ze;
            zip_error_init_with_code(&ze, err);
            const std::string msg = zip_error_strerror(&ze);
            zip_error_fini(&ze);
            if (err == ZIP_ER_OPEN || err == ZIP_ER_READ) {
                throw NotFoundError("cannot read '" + path + "' (" + msg + "): check the path and its permissions");
            }
            throw FormatError("'" + path + "' is not a readable .npz archive (" + msg +
                              "): it is truncated or corrupt; delete it and re-download");
        }
        for (const auto& name : splits) {
            if (std::any_of(splits_.begin(), splits_.end(), [&](const SplitMembers& s) { return s.name == name; })) {
                throw UsageError("split '" + name + "' requested twice: name each split once");
            }
            splits_.push_back(open_split(name));
            info_.push_back({name, splits_.back().count});
        }
        std::vector<MemberChecker::Target> targets;
        for (const auto& split : splits_) targets.push_back({split.images_index, where(split.images_member)});
        checker_ = std::make_unique<MemberChecker>(path_, std::move(targets));
        advance_past_empty();
    }

    const std::vector<SplitInfo>& splits() const override { return info_; }
    std::int64_t position() const override { return position_; }
    std::string current_split() const override {
        return current_ < splits_.size() ? splits_[current_].name : std::string();
    }
    std::int64_t position_in_split() const override { return in_split_; }

    std::string fingerprint() const override {
        // One "name size crc32" line per member, sorted so that the same members repacked
        // in another order still match, then SHA-256 over the lines.
        std::vector<std::string> lines;
        const zip_int64_t n = zip_get_num_entries(zip_.get(), 0);
        constexpr zip_uint64_t need = ZIP_STAT_NAME | ZIP_STAT_SIZE | ZIP_STAT_CRC;
        for (zip_int64_t i = 0; i < n; ++i) {
            zip_stat_t st;
            zip_stat_init(&st);
            if (zip_stat_index(zip_.get(), static_cast<zip_uint64_t>(i), 0, &st) != 0 || (st.valid & need) != need) {
                throw FormatError("'" + path_ + "': cannot read its member table: the .npz is corrupt; re-download it");
            }
            char crc[9];
            std::snprintf(crc, sizeof crc, "%08x", static_cast<unsigned>(st.crc));
            lines.push_back(std::string(st.name) + ' ' + std::to_string(st.size) + ' ' + crc + '\n');
        }
        std::sort(lines.begin(), lines.end());
        const std::string table = std::accumulate(lines.begin(), lines.end(), std::string());
        return sha256_hex(table.data(), table.size());
    }

    std::size_t next_batch(std::size_t n, std::vector<Sample>& out) override {
        if (current_ >= splits_.size() || !ensure_open()) {
            out.clear();
            return 0;
        }
        const SplitMembers& s = splits_[current_];
        const auto take = static_cast<std::size_t>(
            std::min<std::int64_t>(static_cast<std::int64_t>(n), s.count - in_split_));
        out.resize(take);
        const std::size_t bytes = static_cast<std::size_t>(s.height) * s.width * s.channels;
        for (std::size_t i = 0; i < take; ++i) {
            Sample& sample = out[i];
            sample.label = labels_[static_cast<std::size_t>(in_split_)];
            sample.split = s.name;
            sample.height = s.height;
            sample.width = s.width;
            sample.channels = s.channels;
            sample.pixels.resize(bytes);
            images_->read_exact(sample.pixels.data(), bytes);
            ++in_split_;
            ++position_;
        }
        if (in_split_ == s.count) end_split();
        return take;
    }

    std::int64_t skip(std::int64_t n) override {
        if (current_ >= splits_.size() || n <= 0 || !ensure_open()) return 0;
        const SplitMembers& s = splits_[current_];
        const std::int64_t want = std::min(n, s.count - in_split_);
        const std::uint64_t bytes = static_cast<std::uint64_t>(s.height) * s.width * s.channels;
        // A deflated member is skipped by decompressing it: in steps, so Ctrl-C is heard.
        const auto step = static_cast<std::int64_t>(std::max<std::uint64_t>(1, (std::uint64_t{64} << 20) / bytes));
        std::int64_t taken = 0;
        while (taken < want && !is_set(stop_)) {
            const std::int64_t take = std::min(step, want - taken);
            images_->skip(bytes * static_cast<std::uint64_t>(take), scratch_);
            taken += take;
            in_split_ += take;
            position_ += take;
        }
        if (in_split_ == s.count) end_split();
        return taken;
    }

    // Dropping the rest of a split (after --limit) closes its member unread: a deflated
    // member would otherwise be decompressed to the end only to be thrown away.
    std::int64_t skip_entries(std::int64_t n) override {
        if (current_ >= splits_.size() || n <= 0) return 0;
        const std::int64_t rest = splits_[current_].count - in_split_;
        if (n < rest) return skip(n);
        images_.reset();
        labels_.clear();
        position_ += rest;
        ++current_;
        in_split_ = 0;
        advance_past_empty();
        return rest;
    }

private:
    std::string where(const std::string& member) const { return "'" + path_ + "' member '" + member + "'"; }

    [[noreturn]] void missing(const std::string& member) const {
        std::string names;
        const zip_int64_t n = zip_get_num_entries(zip_.get(), 0);
        for (zip_int64_t i = 0; i < n; ++i) {
            const char* nm = zip_get_name(zip_.get(), static_cast<zip_uint64_t>(i), 0);
            if (nm == nullptr) continue;
            if (!names.empty()) names += ", ";
            names += nm;
        }
        throw DataError("'" + path_ + "' has no member '" + member + "' (it has: " +
                        (names.empty() ? std::string("nothing") : names) +
                        "): request only the splits the file has, or use a MedMNIST file");
    }

    // The member np.load(path)[key] reads: one named `key` exactly, else `key`.npy; of
    // several entries of one name the last, as Python's zipfile takes it (appending a
    // member of the same name is how zipfile updates an archive). Sets `name` to it.
    zip_uint64_t locate(const std::string& key, std::string& name) const {
        const zip_int64_t n = zip_get_num_entries(zip_.get(), 0);
        for (const std::string& candidate : {key, key + ".npy"}) {
            std::optional<zip_uint64_t> found;
            for (zip_int64_t i = 0; i < n; ++i) {
                const char* entry = zip_get_name(zip_.get(), static_cast<zip_uint64_t>(i), 0);
                if (entry != nullptr && candidate == entry) found = static_cast<zip_uint64_t>(i);
            }
            if (found) {
                name = candidate;
                return *found;
            }
        }
        missing(key + ".npy");
    }

    std::uint64_t member_size(zip_uint64_t index, const std::string& member) const {
        zip_stat_t st;
        zip_stat_init(&st);
        if (zip_stat_index(zip_.get(), index, 0, &st) != 0 || (st.valid & ZIP_STAT_SIZE) == 0) {
            throw FormatError(where(member) + ": cannot stat member: the .npz is corrupt; re-download it");
        }
        return st.size;
    }

    SplitMembers open_split(const std::string& name) {
        SplitMembers s;
        s.name = name;
        s.images_index = locate(name + "_images", s.images_member);
        s.labels_index = locate(name + "_labels", s.labels_member);
        const std::string& img_name = s.images_member;
        const std::string& lab_name = s.labels_member;
        {
            Member m(zip_.get(), s.images_index, where(img_name));
            s.images = m.read_header();
            const auto& h = s.images;
            if (h.kind != 'u' || h.itemsize != 1) {
                m.bad("images have dtype '" + h.descr + "', expected uint8 ('|u1')");
            }
            if (h.fortran_order) m.bad("images are in Fortran order, expected C order");
            const auto nd = h.shape.size();
            if (nd != 3 && nd != 4) m.bad("images have " + std::to_string(nd) + " dimensions, expected (N, H, W) or (N, H, W, C)");
            if (nd == 4 && h.shape[3] != 1 && h.shape[3] != 3) {
                m.bad("images have " + std::to_string(h.shape[3]) + " channels, expected 1 or 3");
            }
            if (h.shape[1] <= 0 || h.shape[2] <= 0 || h.shape[1] > 65535 || h.shape[2] > 65535) {
                m.bad("image size " + std::to_string(h.shape[1]) + "x" + std::to_string(h.shape[2]) + " is not usable");
            }
            s.count = h.shape[0];
            s.height = static_cast<int>(h.shape[1]);
            s.width = static_cast<int>(h.shape[2]);
            s.channels = nd == 4 ? static_cast<int>(h.shape[3]) : 1;
            if (image_size_ > 0 && (s.height != image_size_ || s.width != image_size_)) {
                throw DataError("'" + path_ + "' split '" + name + "' holds " + std::to_string(s.height) + "x" +
                                std::to_string(s.width) + " images, not " + std::to_string(image_size_) + "x" +
                                std::to_string(image_size_) + " as its name says (--size " +
                                std::to_string(image_size_) + "): pass the --size that matches the file, "
                                "or re-download it");
            }
            check_size(s.images_index, img_name, h);
        }
        {
            Member m(zip_.get(), s.labels_index, where(lab_name));
            s.labels = m.read_header();
            const auto& h = s.labels;
            const bool int_kind = h.kind == 'u' || h.kind == 'i' || h.kind == 'b';
            const bool size_ok = h.itemsize == 1 || h.itemsize == 2 || h.itemsize == 4 || h.itemsize == 8;
            if (!int_kind || !size_ok) m.bad("labels have dtype '" + h.descr + "', expected an integer type");
            if (h.fortran_order && h.shape.size() > 1 && h.shape[1] > 1) {
                m.bad("labels are in Fortran order, expected C order");
            }
            if (h.shape.empty() || h.shape.size() > 2 || (h.shape.size() == 2 && h.shape[1] < 1)) {
                m.bad("labels have shape " + shape_text(h.shape) + ", expected (N,) or (N, K) with K >= 1");
            }
            check_size(s.labels_index, lab_name, h);
            if (h.shape[0] != s.count) {
                throw DataError("'" + path_ + "' split '" + name + "' has " + std::to_string(s.count) +
                                " images but " + std::to_string(h.shape[0]) +
                                " labels: the file is inconsistent; re-download it");
            }
        }
        return s;
    }

    void check_size(zip_uint64_t index, const std::string& member, const NpyHeader& h) const {
        const std::uint64_t expected = h.header_bytes + h.data_bytes;
        const std::uint64_t actual = member_size(index, member);
        // Bytes after the array data are ignored, as numpy ignores them.
        if (actual < expected) {
            throw FormatError(where(member) + ": member holds " + std::to_string(actual) +
                              " bytes but its .npy header describes " + std::to_string(expected) +
                              ": the file is truncated or corrupt; re-download it");
        }
    }

    // Opens the current split's members: all labels, then images positioned at sample 0.
    // False when *stop was set first (then nothing is open).
    bool ensure_open() {
        if (is_set(stop_)) return false;
        if (images_) return true;
        const SplitMembers& s = splits_[current_];
        {
            Member m(zip_.get(), s.labels_index, where(s.labels_member));
            m.read_header();
            const std::size_t row = static_cast<std::size_t>(s.labels.itemsize) *
                                    (s.labels.shape.size() == 2 ? static_cast<std::size_t>(s.labels.shape[1]) : 1);
            // Grown as the data arrives: a member whose header and zip entry both claim far
            // more labels than it holds fails on its data, not on a huge allocation.
            const std::uint64_t total = s.labels.data_bytes;  // row * count: shape (N,) or (N, K)
            std::vector<std::uint8_t> raw;
            while (raw.size() < total) {
                const std::size_t at = raw.size();
                raw.resize(at + static_cast<std::size_t>(std::min<std::uint64_t>(total - at, std::uint64_t{1} << 24)));
                m.read_exact(raw.data() + at, raw.size() - at);
            }
            m.finish();
            labels_.resize(static_cast<std::size_t>(s.count));
            for (std::size_t i = 0; i < labels_.size(); ++i) labels_[i] = decode_label(&raw[i * row], s.labels);
        }
        if (!checker_->wait(current_, stop_)) return false;
        images_ = std::make_unique<Member>(zip_.get(), s.images_index, where(s.images_member));
        images_->read_header();
        return true;
    }

    void end_split() {
        images_->finish();
        images_.reset();
        labels_.clear();
        ++current_;
        in_split_ = 0;
        advance_past_empty();
    }

    void advance_past_empty() {
        while (current_ < splits_.size() && splits_[current_].count == 0) ++current_;
    }

    std::string path_;
    int image_size_ = 0;  // 0: any
    const std::atomic<bool>* stop_ = nullptr;
    ZipPtr zip_;
    std::vector<SplitMembers> splits_;
    std::vector<SplitInfo> info_;
    std::size_t current_ = 0;
    std::int64_t in_split_ = 0;
    std::int64_t position_ = 0;
    std::unique_ptr<Member> images_;
    std::vector<std::int64_t> labels_;
    std::vector<std::uint8_t> scratch_;
    std::unique_ptr<MemberChecker> checker_;  // one target per entry of splits_
};

}  // namespace

std::unique_ptr<ImageSource> open_npz(const std::string& path, const std::vector<std::string>& splits,
                                      const std::atomic<bool>* stop) {
    return std::make_unique<NpzSource>(path, splits, 0, stop);
}

std::unique_ptr<ImageSource> open_medmnist(const MedmnistOptions& options) {
    if (options.name.empty()) throw UsageError("empty MedMNIST dataset name: pass e.g. bloodmnist");
    const fs::path path = fs::path(medmnist_root(options.root)) / medmnist_file_name(options.name, options.size);
    return std::make_unique<NpzSource>(path.string(), options.splits, options.size, options.stop);
}

}  // namespace fstore
