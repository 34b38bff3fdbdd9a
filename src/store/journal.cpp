// The rollback-journal HDF5 virtual file driver (see include/fstore/journal.hpp).
//
// The I/O part follows HDF5 1.10's sec2 driver (pread/pwrite on one descriptor, eoa/eof
// bookkeeping, flock for locking). On top of it, every write or truncate that would change
// bytes below the committed end of file first appends the old bytes to `<file>.journal`.
//
// Journal layout (all integers little-endian):
//   header  (32 bytes): magic "FSJRNL01" | committed_eof u64 | inode u64 | crc32 u32 | birth u32
//           (inode and birth, a stamp of the file's creation time, identify the file: a
//           journal is never applied to another one, also when a deleted store's inode is
//           reused, and is found after the store was renamed; both 0 in older journals,
//           birth 0 where the file system keeps no creation time)
//                       (crc32 over the first 24 bytes)
//   record  (24 bytes + length): magic u32 | crc32 u32 | offset u64 | length u64 | old bytes
//                       (crc32 over offset, length and the old bytes)
// The journal is created (header written, and synced in durable mode) before the first
// change of a transaction, so a journal that exists always knows the committed size.
// Records never overlap (an interval set remembers what is already saved), so the order of
// rollback does not matter; it runs newest first anyway, as any undo log should.
#include "fstore/journal.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fstore/error.hpp"
#include "fstore/files.hpp"

namespace fstore::journal {
namespace {

namespace fs = std::filesystem;

constexpr char header_magic[8] = {'F', 'S', 'J', 'R', 'N', 'L', '0', '1'};
constexpr std::uint32_t record_magic = 0x52454331;  // "REC1"
constexpr std::size_t header_size = 32;
constexpr std::size_t record_header_size = 24;
// Old bytes are saved in records of at most this size, to bound the scratch buffer.
constexpr std::uint64_t max_record_data = 1u << 20;
// HDF5 addresses must fit a signed off_t (as in sec2).
constexpr haddr_t max_address = (haddr_t{1} << 63) - 1;

// ---- small helpers -----------------------------------------------------------------------

void put_u32(unsigned char* p, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
void put_u64(unsigned char* p, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
std::uint32_t get_u32(const unsigned char* p) {
    std::uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}
std::uint64_t get_u64(const unsigned char* p) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

std::uint32_t crc32_of(std::uint32_t crc, const unsigned char* data, std::size_t size) {
    // zlib's crc32 takes uInt lengths: feed it in pieces.
    while (size > 0) {
        const auto n = static_cast<uInt>(std::min<std::size_t>(size, 1u << 30));
        crc = static_cast<std::uint32_t>(::crc32(crc, data, n));
        data += n;
        size -= n;
    }
    return crc;
}

std::string errno_text(int err) { return std::strerror(err); }

// A failed system call inside the driver: carries the message HDF5 gets on its error stack.
struct IoFailure {
    std::string message;
    bool lock = false;  // reported to HDF5 as H5E_CANTLOCKFILE, which callers recognise
};

[[noreturn]] void io_fail(const std::string& what, int err = errno) {
    throw IoFailure{what + ": " + errno_text(err)};
}

// A nonzero stamp of the file's creation time (statx btime), 0 where there is none: with
// the inode, it tells this file from a later one that reuses a deleted file's inode.
std::uint32_t birth_stamp(int fd) {
    struct statx stx {};
    if (::statx(fd, "", AT_EMPTY_PATH, STATX_BTIME, &stx) != 0 || !(stx.stx_mask & STATX_BTIME)) return 0;
    const auto mixed = static_cast<std::uint64_t>(stx.stx_btime.tv_sec) * 1000000007u + stx.stx_btime.tv_nsec;
    const auto stamp = static_cast<std::uint32_t>(mixed ^ (mixed >> 32));
    return stamp != 0 ? stamp : 1;
}

// fstore::pread_full, failing as the driver fails (IoError) when a read fails.
std::size_t pread_full(int fd, void* buffer, std::size_t size, std::uint64_t offset) {
    const std::int64_t got = fstore::pread_full(fd, buffer, size, offset);
    if (got < 0) io_fail("read failed");
    return static_cast<std::size_t>(got);
}

// Full pwrite: loops over short writes and EINTR.
void pwrite_full(int fd, const void* buffer, std::size_t size, std::uint64_t offset) {
    const auto* p = static_cast<const unsigned char*>(buffer);
    std::size_t done = 0;
    while (done < size) {
        const std::size_t n = std::min<std::size_t>(size - done, 1u << 30);
        const ssize_t put = ::pwrite(fd, p + done, n, static_cast<off_t>(offset + done));
        if (put < 0) {
            if (errno == EINTR) continue;
            io_fail("write failed");
        }
        if (put == 0) io_fail("write made no progress", EIO);
        done += static_cast<std::size_t>(put);
    }
}

void datasync(int fd, const char* what) {
    while (::fdatasync(fd) != 0) {
        if (errno != EINTR) io_fail(std::string("fdatasync of the ") + what + " failed");
    }
}

// Makes a create/unlink in `dir` durable.
void sync_directory(const fs::path& file) {
    fs::path dir = file.parent_path();
    if (dir.empty()) dir = ".";
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) io_fail("cannot open directory " + quoted(dir));
    int rc;
    while ((rc = ::fsync(fd)) != 0 && errno == EINTR) {
    }
    const int err = errno;
    ::close(fd);
    if (rc != 0) io_fail("fsync of directory " + quoted(dir) + " failed", err);
}

// Disjoint, merged half-open byte ranges [start, end): what this transaction has saved.
class IntervalSet {
public:
    // The parts of [a, b) not yet in the set.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> missing(std::uint64_t a,
                                                                 std::uint64_t b) const {
        std::vector<std::pair<std::uint64_t, std::uint64_t>> gaps;
        auto it = ranges_.upper_bound(a);
        if (it != ranges_.begin()) {
            auto prev = std::prev(it);
            if (prev->second > a) a = prev->second;
        }
        for (; a < b && it != ranges_.end() && it->first < b; ++it) {
            if (it->first > a) gaps.emplace_back(a, it->first);
            a = std::max(a, it->second);
        }
        if (a < b) gaps.emplace_back(a, b);
        return gaps;
    }

    void insert(std::uint64_t a, std::uint64_t b) {
        if (a >= b) return;
        auto it = ranges_.upper_bound(a);
        if (it != ranges_.begin()) {
            auto prev = std::prev(it);
            if (prev->second >= a) {
                a = prev->first;
                b = std::max(b, prev->second);
                it = ranges_.erase(prev);
            }
        }
        while (it != ranges_.end() && it->first <= b) {
            b = std::max(b, it->second);
            it = ranges_.erase(it);
        }
        ranges_.emplace(a, b);
    }

    void clear() { ranges_.clear(); }

private:
    std::map<std::uint64_t, std::uint64_t> ranges_;
};

// ---- recovery ----------------------------------------------------------------------------

struct RecordRef {
    std::uint64_t offset;     // where the old bytes go in the file
    std::uint64_t length;
    std::uint64_t data_at;    // where they are in the journal
};

bool all_zero_from(int fd, std::uint64_t from, std::uint64_t to) {
    std::vector<unsigned char> buf(64 * 1024);
    while (from < to) {
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), to - from));
        if (pread_full(fd, buf.data(), n, from) != n) return false;
        if (std::any_of(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n),
                        [](unsigned char c) { return c != 0; }))
            return false;
        from += n;
    }
    return true;
}

// Rolls the file open on `fd` (locked exclusively by the caller) back using `jpath`.
// Returns false when there is no journal. Idempotent: every step can be redone.
bool roll_back(int fd, const fs::path& file, const fs::path& jpath) {
    Descriptor jfd(::open(jpath.c_str(), O_RDONLY | O_CLOEXEC));
    if (!jfd.valid()) {
        if (errno == ENOENT) return false;
        io_fail("cannot open journal " + quoted(jpath));
    }
    struct stat st {};
    if (::fstat(jfd.get(), &st) != 0) io_fail("cannot stat journal " + quoted(jpath));
    const auto jsize = static_cast<std::uint64_t>(st.st_size);

    const std::string fix =
        "move it out of the way if another program made it, then check " + quoted(file) +
        " (it may hold a half-written batch)";
    if (jsize < header_size) {
        // Torn header: the journal is written before the first change, so the file was
        // never touched in this transaction.
        jfd.reset();
        if (::unlink(jpath.c_str()) != 0 && errno != ENOENT)
            io_fail("cannot remove journal " + quoted(jpath));
        sync_directory(jpath);
        return true;
    }

    unsigned char header[header_size];
    if (pread_full(jfd.get(), header, header_size, 0) != header_size)
        io_fail("short read of journal " + quoted(jpath), EIO);
    if (std::memcmp(header, header_magic, sizeof header_magic) != 0)
        throw FormatError("journal " + quoted(jpath) +
                          " is not an fstore rollback journal (bad magic): " + fix);
    if (crc32_of(0, header, 24) != get_u32(header + 24))
        throw FormatError("journal " + quoted(jpath) + " has a corrupt header (checksum): " +
                          fix);
    const std::uint64_t committed_eof = get_u64(header + 8);
    const std::uint64_t inode = get_u64(header + 16);
    const std::uint32_t birth = get_u32(header + 28);
    struct stat file_st {};
    if (::fstat(fd, &file_st) != 0) io_fail("cannot stat " + quoted(file));
    const std::uint32_t file_birth = birth_stamp(fd);
    if ((inode != 0 && inode != static_cast<std::uint64_t>(file_st.st_ino)) ||
        (birth != 0 && file_birth != 0 && birth != file_birth))
        throw FormatError("journal " + quoted(jpath) + " was left by a writer of another file (inode " +
                          std::to_string(inode) + ", " + quoted(file) + " is inode " +
                          std::to_string(file_st.st_ino) +
                          "): the store was replaced or moved after a crash; move the journal aside, "
                          "or beside the file it belongs to as <that name>.journal");

    // Scan: collect complete, checksum-valid records; stop at a torn tail.
    std::vector<RecordRef> records;
    std::vector<unsigned char> data;
    std::uint64_t pos = header_size;
    while (pos < jsize) {
        const std::uint64_t left = jsize - pos;
        if (left < record_header_size) break;  // torn record header
        unsigned char rh[record_header_size];
        if (pread_full(jfd.get(), rh, record_header_size, pos) != record_header_size)
            io_fail("short read of journal " + quoted(jpath), EIO);
        const std::uint32_t magic = get_u32(rh);
        const std::uint32_t crc = get_u32(rh + 4);
        const std::uint64_t offset = get_u64(rh + 8);
        const std::uint64_t length = get_u64(rh + 16);
        const std::uint64_t data_left = left - record_header_size;
        const bool sane = magic == record_magic && length > 0 && length <= max_record_data &&
                          offset < committed_eof && length <= committed_eof - offset;
        if (sane && length > data_left) break;  // the last write stopped half-way
        bool valid = sane;
        if (valid) {
            data.resize(static_cast<std::size_t>(length));
            if (pread_full(jfd.get(), data.data(), data.size(), pos + record_header_size) !=
                data.size())
                io_fail("short read of journal " + quoted(jpath), EIO);
            valid = crc32_of(crc32_of(0, rh + 8, 16), data.data(), data.size()) == crc;
        }
        if (!valid) {
            // Only the tail may be torn: a bad last record, or a zero-filled tail (a crash
            // after the journal grew but before its data reached the disk).
            const bool last = sane && pos + record_header_size + length == jsize;
            if (last || all_zero_from(jfd.get(), pos, jsize)) break;
            throw FormatError("journal " + quoted(jpath) + " is corrupt at byte " +
                              std::to_string(pos) + " (not just a torn tail): " + fix);
        }
        records.push_back({offset, length, pos + record_header_size});
        pos += record_header_size + length;
    }

    for (auto it = records.rbegin(); it != records.rend(); ++it) {
        data.resize(static_cast<std::size_t>(it->length));
        if (pread_full(jfd.get(), data.data(), data.size(), it->data_at) != data.size())
            io_fail("short read of journal " + quoted(jpath), EIO);
        pwrite_full(fd, data.data(), data.size(), it->offset);
    }
    while (::ftruncate(fd, static_cast<off_t>(committed_eof)) != 0) {
        if (errno != EINTR) io_fail("cannot truncate " + quoted(file));
    }
    while (::fsync(fd) != 0) {
        if (errno != EINTR) io_fail("fsync of " + quoted(file) + " failed");
    }
    jfd.reset();
    // Removing the journal last makes recovery safe to repeat if it is interrupted.
    if (::unlink(jpath.c_str()) != 0 && errno != ENOENT)
        io_fail("cannot remove journal " + quoted(jpath));
    sync_directory(jpath);
    return true;
}

// ---- the driver --------------------------------------------------------------------------

// Driver-specific file access properties (stored in the fapl by H5Pset_driver).
struct Config {
    std::uint32_t durable;
};

// Everything the driver knows about one open file. get_handle hands it to commit().
class OpenFile {
public:
    OpenFile(Descriptor fd, fs::path path, bool durable, bool writable, const struct stat& st)
        : fd_(std::move(fd)),
          path_(std::move(path)),
          journal_(journal_path(path_)),
          durable_(durable),
          writable_(writable),
          eof_(static_cast<haddr_t>(st.st_size)),
          committed_eof_(static_cast<std::uint64_t>(st.st_size)),
          device_(st.st_dev),
          inode_(st.st_ino) {}

    OpenFile(const OpenFile&) = delete;
    OpenFile& operator=(const OpenFile&) = delete;

    int fd() const { return fd_.get(); }
    bool durable() const { return durable_; }
    haddr_t eoa() const { return eoa_; }
    void set_eoa(haddr_t addr) { eoa_ = addr; }
    haddr_t eof() const { return eof_; }
    bool in_transaction() const { return journal_fd_.valid(); }

    int compare(const OpenFile& other) const {
        if (device_ != other.device_) return device_ < other.device_ ? -1 : 1;
        if (inode_ != other.inode_) return inode_ < other.inode_ ? -1 : 1;
        return 0;
    }

    void read(haddr_t addr, std::size_t size, void* buffer) const {
        check_region(addr, size);
        const std::size_t got = pread_full(fd(), buffer, size, addr);
        // Past the end of file reads as zeros, as in sec2.
        if (got < size) std::memset(static_cast<unsigned char*>(buffer) + got, 0, size - got);
    }

    void write(haddr_t addr, std::size_t size, const void* buffer) {
        check_region(addr, size);
        if (!writable_) throw IoFailure{"file " + quoted(path_) + " is open read-only"};
        // A failed (or discarded) transaction is rolled back at close: nothing written now
        // could survive, and writing it could only fail again (a full disk) and leave HDF5
        // unable to close the file.
        if (failed_) return;
        failing_the_transaction([&] {
            save_old_bytes(addr, addr + size);
            pwrite_full(fd(), buffer, size, addr);
        });
        eof_ = std::max<haddr_t>(eof_, addr + size);
    }

    void truncate() {
        if (eoa_ == eof_ || failed_) return;
        failing_the_transaction([&] {
            begin_transaction();  // even growing changes the size that rollback restores
            save_old_bytes(std::min(eoa_, eof_), eof_);
            while (::ftruncate(fd(), static_cast<off_t>(eoa_)) != 0) {
                if (errno != EINTR) io_fail("cannot resize " + quoted(path_));
            }
        });
        eof_ = eoa_;
    }

    // Marks the transaction failed: later writes are dropped and close rolls back.
    void discard() { failed_ = true; }

    void commit() {
        // The first failure's own words: HDF5 often drops them (a chunk written back when a
        // dataset closes), and "No space left on device" is what the user needs to read.
        if (failed_)
            throw IoFailure{(failure_.empty() ? "the transaction of " + quoted(path_) + " was discarded"
                                              : "a write to " + quoted(path_) + " failed (" + failure_ + ")") +
                            " since the last commit; it is rolled back to that commit when closed"};
        if (!journal_fd_.valid()) {
            committed_eof_ = eof_;
            return;
        }
        if (durable_) datasync(fd(), "file");
        // The commit point: once the journal is gone, nothing rolls these writes back.
        if (::unlink(journal_.c_str()) != 0) io_fail("cannot remove journal " + quoted(journal_));
        journal_fd_.reset();
        if (durable_) sync_directory(journal_);
        committed_eof_ = eof_;
        journal_size_ = 0;
        saved_.clear();
        failed_ = false;
        failure_.clear();
    }

    // H5Fclose has flushed everything: a clean close commits, as sec2 would keep it. If a
    // write failed since the last commit the file may be inconsistent: roll back instead,
    // now, while the file is still locked.
    void finish() {
        if (!journal_fd_.valid()) {
            // Failed before anything below the committed end was touched: only appended
            // bytes, which the committed metadata does not reference. Cut them off.
            if (failed_ && eof_ > committed_eof_ &&
                ::ftruncate(fd(), static_cast<off_t>(committed_eof_)) == 0)
                eof_ = committed_eof_;
            return;
        }
        if (!failed_) {
            commit();
            return;
        }
        journal_fd_.reset();
        roll_back(fd(), path_, journal_);
        saved_.clear();
        journal_size_ = 0;
    }

    // Writers hold their lock for as long as a transaction is open.
    bool may_unlock() const { return !journal_fd_.valid(); }

private:
    void check_region(haddr_t addr, std::size_t size) const {
        if (addr == HADDR_UNDEF || addr > max_address || size > max_address - addr)
            throw IoFailure{"address overflow"};
        if (addr + size > eoa_)
            throw IoFailure{"access past the end of the allocated space (addr " +
                            std::to_string(addr) + ", size " + std::to_string(size) +
                            ", eoa " + std::to_string(eoa_) + ")"};
    }

    // Before changing [a, b): journal what existed there at the last commit.
    void save_old_bytes(std::uint64_t a, std::uint64_t b) {
        if (a >= b) return;
        begin_transaction();
        const std::uint64_t end = std::min<std::uint64_t>(b, committed_eof_);
        if (a >= end) return;
        const auto gaps = saved_.missing(a, end);
        if (gaps.empty()) return;
        for (const auto& [from, to] : gaps) {
            for (std::uint64_t at = from; at < to;) {
                const std::uint64_t n = std::min(max_record_data, to - at);
                append_record(at, n);
                at += n;
            }
        }
        if (durable_) datasync(journal_fd_.get(), "journal");
        saved_.insert(a, end);
    }

    void append_record(std::uint64_t offset, std::uint64_t length) {
        scratch_.resize(record_header_size + static_cast<std::size_t>(length));
        unsigned char* data = scratch_.data() + record_header_size;
        // Bytes below the committed EOF that are gone were saved when the file shrank, so
        // every byte asked for here exists; a short read means something else changed it.
        if (pread_full(fd(), data, static_cast<std::size_t>(length), offset) != length)
            throw IoFailure{"file " + quoted(path_) + " shrank under the journal"};
        put_u32(scratch_.data(), record_magic);
        put_u64(scratch_.data() + 8, offset);
        put_u64(scratch_.data() + 16, length);
        put_u32(scratch_.data() + 4,
                crc32_of(crc32_of(0, scratch_.data() + 8, 16), data, static_cast<std::size_t>(length)));
        pwrite_full(journal_fd_.get(), scratch_.data(), scratch_.size(), journal_size_);
        journal_size_ += scratch_.size();
    }

    // The journal exists (with the committed size) before the first change of a transaction.
    void begin_transaction() {
        if (journal_fd_.valid()) return;
        Descriptor jfd(::open(journal_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
        if (!jfd.valid()) io_fail("cannot create journal " + quoted(journal_));
        unsigned char header[header_size] = {};
        std::memcpy(header, header_magic, sizeof header_magic);
        put_u64(header + 8, committed_eof_);
        put_u64(header + 16, static_cast<std::uint64_t>(inode_));
        put_u32(header + 24, crc32_of(0, header, 24));
        put_u32(header + 28, birth_stamp(fd()));
        try {
            pwrite_full(jfd.get(), header, header_size, 0);
            if (durable_) {
                datasync(jfd.get(), "journal");
                sync_directory(journal_);
            }
        } catch (...) {
            ::unlink(journal_.c_str());
            throw;
        }
        journal_fd_ = std::move(jfd);
        journal_size_ = header_size;
    }

    Descriptor fd_;
    fs::path path_;
    fs::path journal_;
    bool durable_;
    bool writable_;
    haddr_t eoa_ = 0;
    haddr_t eof_;
    std::uint64_t committed_eof_;
    dev_t device_;
    ino_t inode_;
    Descriptor journal_fd_;
    std::uint64_t journal_size_ = 0;
    IntervalSet saved_;
    std::vector<unsigned char> scratch_;
    bool failed_ = false;  // a write or truncate failed since the last commit
    std::string failure_;  // the first of those failures, in the driver's words

    void fail_transaction(const std::string& message) {
        if (!failed_ && failure_.empty()) failure_ = message;
        failed_ = true;
    }

    // Runs a change to the file; if it throws, the transaction is failed (and so rolled back
    // at close) before the exception goes on.
    template <typename Change>
    void failing_the_transaction(Change&& change) {
        try {
            change();
        } catch (const IoFailure& e) {
            fail_transaction(e.message);
            throw;
        } catch (...) {
            fail_transaction("");
            throw;
        }
    }
};

// HDF5 keeps the public part first and hands it back to every callback.
struct DriverFile {
    H5FD_t pub;
    OpenFile* file;
};

OpenFile& state(H5FD_t* f) { return *reinterpret_cast<DriverFile*>(f)->file; }
const OpenFile& state(const H5FD_t* f) { return *reinterpret_cast<const DriverFile*>(f)->file; }

void push_error(const char* func, hid_t minor, const std::string& message) {
    H5Epush2(H5E_DEFAULT, __FILE__, func, __LINE__, H5E_ERR_CLS, H5E_VFL, minor, "%s",
             message.c_str());
}

// Runs `body`, turning any exception into an HDF5 error (exceptions must not cross C frames).
template <typename Body>
herr_t guarded(const char* func, hid_t minor, Body&& body) {
    try {
        body();
        return 0;
    } catch (const IoFailure& e) {
        push_error(func, e.lock ? H5E_CANTLOCKFILE : minor, e.message);
    } catch (const std::exception& e) {
        push_error(func, minor, e.what());
    } catch (...) {
        push_error(func, minor, "unknown failure");
    }
    return -1;
}

void* fapl_get(H5FD_t* f) {
    try {
        return new Config{state(f).durable() ? 1u : 0u};
    } catch (...) {
        return nullptr;
    }
}

void* fapl_copy(const void* info) {
    try {
        return new Config(*static_cast<const Config*>(info));
    } catch (...) {
        return nullptr;
    }
}

herr_t fapl_free(void* info) {
    delete static_cast<Config*>(info);
    return 0;
}

// Who a journal's (intact) header says it belongs to.
struct JournalOwner {
    dev_t device;
    std::uint64_t inode;
    std::uint32_t birth;
};

std::optional<JournalOwner> journal_owner(const fs::path& jpath) {
    Descriptor jfd(::open(jpath.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat jst {};
    unsigned char header[header_size];
    try {
        if (!jfd.valid() || ::fstat(jfd.get(), &jst) != 0 ||
            pread_full(jfd.get(), header, header_size, 0) != header_size)
            return std::nullopt;
    } catch (const IoFailure&) {
        return std::nullopt;  // unreadable: not evidence of anything
    }
    if (std::memcmp(header, header_magic, sizeof header_magic) != 0 || crc32_of(0, header, 24) != get_u32(header + 24))
        return std::nullopt;
    return JournalOwner{jst.st_dev, get_u64(header + 16), get_u32(header + 28)};
}

// Whether `owner` names the file open as `fd`: its inode and a known creation stamp (an
// inode alone may be a deleted store's, reused by this file).
bool names_file(const JournalOwner& owner, int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0 || st.st_dev != owner.device || owner.inode != static_cast<std::uint64_t>(st.st_ino))
        return false;
    const std::uint32_t birth = birth_stamp(fd);
    return birth != 0 && owner.birth == birth;
}

// The file in the journal's directory that its header names, if one is there (the store
// renamed after its writer was killed, or another hard link of it).
std::optional<fs::path> file_named_by(const fs::path& jpath, const JournalOwner& owner) {
    std::error_code ec;
    for (fs::directory_iterator it(directory_of(jpath), ec), end; !ec && it != end; it.increment(ec)) {
        if (it->path().extension() == ".journal" || !it->is_regular_file(ec)) continue;
        Descriptor fd(::open(it->path().c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
        if (fd.valid() && names_file(owner, fd.get())) return it->path();
    }
    return std::nullopt;
}

// `fd`, just created or truncated at `path`, starts without a journal. One left under its
// name belongs either to the file that was there (gone, or this very file being truncated:
// removed) or to a store renamed after a kill, still in the directory: then it is moved to
// that store's name, where its next open rolls it back. Deleting it would leave that store
// half-written for good.
void clear_journal_name(int fd, const fs::path& path) {
    const fs::path jpath = journal_path(path);
    std::error_code ec;
    if (!fs::exists(jpath, ec)) return;
    const auto owner = journal_owner(jpath);
    const auto other = owner && !names_file(*owner, fd) ? file_named_by(jpath, *owner) : std::nullopt;
    if (!other) {
        if (::unlink(jpath.c_str()) != 0 && errno != ENOENT) io_fail("unable to remove stale journal " + quoted(jpath));
        return;
    }
    {
        // A store renamed while its writer still runs: that writer commits by removing the
        // journal under the old name, so the journal stays where it is, and so must the new file.
        Descriptor owner_fd(::open(other->c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
        if (owner_fd.valid() && ::flock(owner_fd.get(), LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
            throw IoFailure{"journal " + quoted(jpath) + " belongs to " + quoted(*other) +
                                ", which another process has open (its writer, or a reader): wait for it to finish",
                            true};
        }
    }
    const fs::path target = journal_path(*other);
    if (fs::exists(target, ec)) {
        throw IoFailure{"journal " + quoted(jpath) + " belongs to " + quoted(*other) +
                        ", which has a journal of its own: open " + quoted(*other) +
                        " for writing once (it rolls back), then retry"};
    }
    if (::rename(jpath.c_str(), target.c_str()) != 0) io_fail("unable to move journal " + quoted(jpath) + " to " + quoted(target));
    sync_directory(target);
}

H5FD_t* driver_open(const char* name, unsigned flags, hid_t fapl, haddr_t maxaddr) {
    DriverFile* result = nullptr;
    guarded("journal_open", H5E_CANTOPENFILE, [&] {
        if (name == nullptr || *name == '\0') throw IoFailure{"invalid file name"};
        if (maxaddr == 0 || maxaddr == HADDR_UNDEF || maxaddr > max_address)
            throw IoFailure{"bogus maxaddr"};
        const auto* config = static_cast<const Config*>(H5Pget_driver_info(fapl));
        const bool durable = config != nullptr && config->durable != 0;
        const bool writable = (flags & H5F_ACC_RDWR) != 0;
        const bool fresh = (flags & (H5F_ACC_TRUNC | H5F_ACC_CREAT)) != 0;
        const fs::path path(name);

        int o_flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC;
        // No O_TRUNC: truncate only once the lock is held, so a live writer's file survives.
        if (flags & H5F_ACC_CREAT) o_flags |= O_CREAT;
        if (flags & H5F_ACC_EXCL) o_flags |= O_EXCL;
        Descriptor fd(::open(name, o_flags, 0666));
        if (!fd.valid()) io_fail("unable to open file " + quoted(path));

        if (writable) {
            // The writer lock, taken here and not left to HDF5, which skips it when
            // HDF5_USE_FILE_LOCKING=FALSE (common on clusters): two writers of one file would
            // interleave their transactions. HDF5 taking it again later is a no-op.
            if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
                const int err = errno;
                throw IoFailure{"unable to lock file " + quoted(path) +
                                    " (another process has it open): " + errno_text(err),
                                true};
            }
            if (fresh) {
                if ((flags & H5F_ACC_TRUNC) && ::ftruncate(fd.get(), 0) != 0)
                    io_fail("unable to truncate " + quoted(path));
                // A journal of an earlier file by this name must not touch the new one.
                clear_journal_name(fd.get(), path);
            } else if (const auto journal = find_journal(path)) {
                roll_back(fd.get(), path, *journal);  // a killed writer's transaction
            }
        }
        struct stat st {};
        if (::fstat(fd.get(), &st) != 0) io_fail("unable to fstat " + quoted(path));
        auto file = std::make_unique<OpenFile>(std::move(fd), path, durable, writable, st);
        result = new DriverFile{};
        result->file = file.release();
    });
    return result ? &result->pub : nullptr;
}

herr_t driver_close(H5FD_t* f) {
    auto* df = reinterpret_cast<DriverFile*>(f);
    const herr_t rc = guarded("journal_close", H5E_CANTCLOSEFILE, [&] { df->file->finish(); });
    delete df->file;  // closes the descriptor, which drops the lock
    delete df;
    return rc;
}

int driver_cmp(const H5FD_t* a, const H5FD_t* b) { return state(a).compare(state(b)); }

herr_t driver_query(const H5FD_t*, unsigned long* flags) {
    if (flags != nullptr) {
        // As sec2, minus the POSIX handle: get_handle returns the driver state, not an fd.
        *flags = H5FD_FEAT_AGGREGATE_METADATA | H5FD_FEAT_ACCUMULATE_METADATA |
                 H5FD_FEAT_DATA_SIEVE | H5FD_FEAT_AGGREGATE_SMALLDATA |
                 H5FD_FEAT_DEFAULT_VFD_COMPATIBLE;
    }
    return 0;
}

haddr_t driver_get_eoa(const H5FD_t* f, H5FD_mem_t) { return state(f).eoa(); }

herr_t driver_set_eoa(H5FD_t* f, H5FD_mem_t, haddr_t addr) {
    return guarded("journal_set_eoa", H5E_OVERFLOW, [&] {
        if (addr > max_address) throw IoFailure{"address overflow"};
        state(f).set_eoa(addr);
    });
}

haddr_t driver_get_eof(const H5FD_t* f, H5FD_mem_t) { return state(f).eof(); }

herr_t driver_get_handle(H5FD_t* f, hid_t, void** handle) {
    if (handle == nullptr) return -1;
    *handle = &state(f);
    return 0;
}

herr_t driver_read(H5FD_t* f, H5FD_mem_t, hid_t, haddr_t addr, size_t size, void* buffer) {
    return guarded("journal_read", H5E_READERROR, [&] { state(f).read(addr, size, buffer); });
}

herr_t driver_write(H5FD_t* f, H5FD_mem_t, hid_t, haddr_t addr, size_t size, const void* buffer) {
    return guarded("journal_write", H5E_WRITEERROR, [&] { state(f).write(addr, size, buffer); });
}

herr_t driver_truncate(H5FD_t* f, hid_t, hbool_t) {
    return guarded("journal_truncate", H5E_SEEKERROR, [&] { state(f).truncate(); });
}

herr_t driver_lock(H5FD_t* f, hbool_t rw) {
    return guarded("journal_lock", H5E_CANTLOCK, [&] {
        if (::flock(state(f).fd(), (rw ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
            const int err = errno;
            throw IoFailure{std::string("unable to lock file ") +
                                (rw ? "for writing (another process has it open)"
                                    : "(another process is writing it)") +
                                ": " + errno_text(err),
                            true};
        }
    });
}

herr_t driver_unlock(H5FD_t* f) {
    return guarded("journal_unlock", H5E_CANTUNLOCK, [&] {
        if (!state(f).may_unlock()) return;
        if (::flock(state(f).fd(), LOCK_UN) != 0) io_fail("unable to unlock the file");
    });
}

H5FD_class_t make_driver_class() {
    H5FD_class_t c{};
    c.name = "fstore_journal";
    c.maxaddr = max_address;
    c.fc_degree = H5F_CLOSE_WEAK;
    c.fapl_size = sizeof(Config);
    c.fapl_get = fapl_get;
    c.fapl_copy = fapl_copy;
    c.fapl_free = fapl_free;
    c.open = driver_open;
    c.close = driver_close;
    c.cmp = driver_cmp;
    c.query = driver_query;
    c.get_eoa = driver_get_eoa;
    c.set_eoa = driver_set_eoa;
    c.get_eof = driver_get_eof;
    c.get_handle = driver_get_handle;
    c.read = driver_read;
    c.write = driver_write;
    c.truncate = driver_truncate;
    c.lock = driver_lock;
    c.unlock = driver_unlock;
    const H5FD_mem_t map[] = H5FD_FLMAP_DICHOTOMY;
    std::copy(std::begin(map), std::end(map), std::begin(c.fl_map));
    return c;
}

// Registered once per process, on first use (thread-safe static initialization).
hid_t driver_id() {
    static const hid_t id = [] {
        const H5FD_class_t cls = make_driver_class();
        const hid_t registered = H5FDregister(&cls);
        if (registered < 0)
            throw InternalError("cannot register the fstore journal HDF5 driver: this HDF5 build "
                                "rejects custom file drivers; use HDF5 1.10.x");
        return registered;
    }();
    return id;
}

class PlistHandle {
public:
    explicit PlistHandle(hid_t id) : id_(id) {}
    PlistHandle(const PlistHandle&) = delete;
    PlistHandle& operator=(const PlistHandle&) = delete;
    ~PlistHandle() {
        if (id_ >= 0) H5Pclose(id_);
    }
    hid_t get() const { return id_; }
    hid_t release() { return std::exchange(id_, -1); }

private:
    hid_t id_;
};

}  // namespace

std::filesystem::path journal_path(const std::filesystem::path& path) {
    // A store reached through a symlink has one journal, beside the file itself, whichever
    // name a writer or reader used (a link's own name would hide a killed writer's journal
    // from opens by the real name). A dangling link keeps its own name.
    std::error_code ec;
    std::filesystem::path result = path;
    if (fs::is_symlink(path, ec)) {
        auto target = fs::canonical(path, ec);
        if (!ec) result = std::move(target);
    }
    result += ".journal";
    return result;
}

std::optional<std::filesystem::path> find_journal(const std::filesystem::path& path) {
    std::error_code ec;
    const fs::path own = journal_path(path);
    if (fs::exists(own, ec)) return own;
    struct stat file_st {};
    // Not a store file (a FIFO would block the open below): no journal of its own.
    if (::stat(path.c_str(), &file_st) != 0 || !S_ISREG(file_st.st_mode)) return std::nullopt;
    Descriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!fd.valid()) return std::nullopt;
    // A killed writer's journal under the store's old name (renamed since, or another hard
    // link in this directory): the inode in its header says whose it is.
    for (fs::directory_iterator it(directory_of(own), ec), end; !ec && it != end; it.increment(ec)) {
        const fs::path candidate = it->path();
        if (candidate.extension() != ".journal" || !it->is_regular_file(ec)) continue;
        if (const auto owner = journal_owner(candidate); owner && names_file(*owner, fd.get())) return candidate;
    }
    return std::nullopt;
}

hid_t file_access_plist(bool durable) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    const hid_t id = driver_id();
    PlistHandle fapl(H5Pcreate(H5P_FILE_ACCESS));
    if (fapl.get() < 0) throw InternalError("H5Pcreate(H5P_FILE_ACCESS) failed: out of memory?");
    const Config config{durable ? 1u : 0u};
    if (H5Pset_driver(fapl.get(), id, &config) < 0)
        throw InternalError("cannot select the fstore journal HDF5 driver (H5Pset_driver failed)");
    return fapl.release();
}

namespace {

// The driver state behind an open file id (commit and discard act on it).
OpenFile& open_file_of(hid_t file, const char* caller) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    PlistHandle fapl(H5Fget_access_plist(file));
    if (fapl.get() < 0)
        throw UsageError(std::string(caller) + " was given an invalid HDF5 file id: pass an open file");
    if (H5Pget_driver(fapl.get()) != driver_id())
        throw UsageError(std::string(caller) + " needs a file opened with journal::file_access_plist()");
    void* handle = nullptr;
    if (H5Fget_vfd_handle(file, fapl.get(), &handle) < 0 || handle == nullptr)
        throw InternalError("cannot reach the journal driver of an open file (H5Fget_vfd_handle)");
    return *static_cast<OpenFile*>(handle);
}

}  // namespace

void discard(hid_t file) { open_file_of(file, "journal::discard()").discard(); }

void commit(hid_t file) {
    OpenFile& open = open_file_of(file, "journal::commit()");
    try {
        open.commit();
    } catch (const IoFailure& e) {
        throw IoError("commit failed: " + e.message +
                      ": nothing since that commit is kept; free space or fix the disk, then rerun to resume");
    }
}

void release_journal_name(const std::filesystem::path& path) {
    Descriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!fd.valid()) throw IoError("cannot open " + quoted(path) + ": " + errno_text(errno) + ": check the path");
    try {
        clear_journal_name(fd.get(), path);
    } catch (const IoFailure& e) {
        if (e.lock) throw LockedError(e.message);
        throw IoError(e.message);
    }
}

bool recover(const std::filesystem::path& path) {
    const auto found = find_journal(path);
    if (!found) return false;
    const fs::path jpath = *found;
    Descriptor fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd.valid()) {
        if (errno == ENOENT)
            throw NotFoundError("journal " + quoted(jpath) + " is left over but " +
                                quoted(path) + " does not exist: delete the journal");
        throw NotFoundError("cannot open " + quoted(path) + " for writing to roll it back (" +
                            errno_text(errno) + "): check its permissions");
    }
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            throw LockedError(quoted(path) + " is being written by another process (its journal "
                              "is live): wait for that writer to finish");
        throw InternalError("cannot lock " + quoted(path) + ": " + errno_text(errno));
    }
    try {
        return roll_back(fd.get(), path, jpath);
    } catch (const IoFailure& e) {
        // Disk full, EIO, or a directory the journal cannot be removed from (permissions).
        throw IoError("rolling back " + quoted(path) + " failed: " + e.message +
                      ": fix the disk problem or the permissions of its directory, then run again "
                      "(recovery can be repeated)");
    }
}

}  // namespace fstore::journal
