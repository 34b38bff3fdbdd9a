// Tests of the rollback-journal HDF5 driver: plain use, rollback after a crash (simulated
// with forked writers that die without closing), random SIGKILLs, torn and corrupt journals,
// locking, and a printed overhead measurement against sec2.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <hdf5.h>

#include "fstore/error.hpp"
#include "fstore/h5.hpp"
#include "fstore/journal.hpp"
#include "../../common/child_process.hpp"

namespace fs = std::filesystem;
namespace journal = fstore::journal;

namespace {

// ---- RAII for HDF5 ids: the library's own handles -----------------------------------------

using File = fstore::h5::File;
using Dataset = fstore::h5::Dataset;
using Space = fstore::h5::Dataspace;
using Plist = fstore::h5::PropList;
using Attr = fstore::h5::Attribute;
using Group = fstore::h5::Group;

class TempDir {
public:
    explicit TempDir(const std::string& name) {
        path_ = fs::temp_directory_path() /
                ("fstore-journal-" + std::to_string(::getpid()) + "-" + name);
        fs::remove_all(path_);
        fs::create_directories(path_);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    fs::path operator/(const std::string& name) const { return path_ / name; }

private:
    fs::path path_;
};

std::string read_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void append_bytes(const fs::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::app);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// ---- HDF5 helpers ------------------------------------------------------------------------

File create_journaled(const fs::path& p, bool durable = false) {
    Plist fapl(journal::file_access_plist(durable));
    return File(H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()));
}

File open_journaled(const fs::path& p) {
    Plist fapl(journal::file_access_plist());
    return File(H5Fopen(p.c_str(), H5F_ACC_RDWR, fapl.get()));
}

File open_default(const fs::path& p, unsigned flags = H5F_ACC_RDONLY) {
    return File(H5Fopen(p.c_str(), flags, H5P_DEFAULT));
}

void flush_commit(hid_t file) {
    ASSERT_GE(H5Fflush(file, H5F_SCOPE_GLOBAL), 0);
    journal::commit(file);
}

// An extendible int32 dataset of `cols` columns in which cell (r, c) holds r * cols + c.
Dataset create_rows(hid_t loc, const char* name, hsize_t cols, hsize_t chunk_rows,
                    bool deflate) {
    const hsize_t dims[2] = {0, cols};
    const hsize_t maxdims[2] = {H5S_UNLIMITED, cols};
    Space space(H5Screate_simple(2, dims, maxdims));
    Plist dcpl(H5Pcreate(H5P_DATASET_CREATE));
    const hsize_t chunk[2] = {chunk_rows, cols};
    H5Pset_chunk(dcpl.get(), 2, chunk);
    if (deflate) H5Pset_deflate(dcpl.get(), 1);
    return Dataset(H5Dcreate2(loc, name, H5T_STD_I32LE, space.get(), H5P_DEFAULT, dcpl.get(),
                              H5P_DEFAULT));
}

hsize_t row_count(hid_t dset) {
    Space space(H5Dget_space(dset));
    hsize_t dims[2] = {0, 0};
    H5Sget_simple_extent_dims(space.get(), dims, nullptr);
    return dims[0];
}

bool append_rows(hid_t dset, hsize_t n, hsize_t cols) {
    const hsize_t first = row_count(dset);
    const hsize_t new_dims[2] = {first + n, cols};
    if (H5Dset_extent(dset, new_dims) < 0) return false;
    std::vector<std::int32_t> values(n * cols);
    for (hsize_t i = 0; i < values.size(); ++i)
        values[i] = static_cast<std::int32_t>(first * cols + i);
    Space file_space(H5Dget_space(dset));
    const hsize_t start[2] = {first, 0};
    const hsize_t count[2] = {n, cols};
    H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr);
    Space mem_space(H5Screate_simple(2, count, nullptr));
    return H5Dwrite(dset, H5T_NATIVE_INT32, mem_space.get(), file_space.get(), H5P_DEFAULT,
                    values.data()) >= 0;
}

// Number of rows, or -1 when the content is not exactly r * cols + c.
long long checked_rows(hid_t dset, hsize_t cols) {
    const hsize_t n = row_count(dset);
    std::vector<std::int32_t> values(n * cols);
    if (n > 0 && H5Dread(dset, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                         values.data()) < 0)
        return -1;
    for (hsize_t i = 0; i < values.size(); ++i)
        if (values[i] != static_cast<std::int32_t>(i)) return -1;
    return static_cast<long long>(n);
}

bool set_attr(hid_t obj, const char* name, long long value) {
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    Space scalar(H5Screate(H5S_SCALAR));
    Attr attr(H5Acreate2(obj, name, H5T_STD_I64LE, scalar.get(), H5P_DEFAULT, H5P_DEFAULT));
    return attr.valid() && H5Awrite(attr.get(), H5T_NATIVE_LLONG, &value) >= 0;
}

long long get_attr(hid_t obj, const char* name) {
    Attr attr(H5Aopen(obj, name, H5P_DEFAULT));
    long long value = -1;
    if (!attr.valid() || H5Aread(attr.get(), H5T_NATIVE_LLONG, &value) < 0) return -1;
    return value;
}

constexpr hsize_t cols = 16;

// A committed, closed file: /rows (300 rows, chunks of 50), root attribute "answer" = 42.
// Returns its bytes.
std::string make_committed(const fs::path& p) {
    {
        File f = create_journaled(p);
        EXPECT_TRUE(f.valid());
        Dataset d = create_rows(f.get(), "rows", cols, 50, true);
        EXPECT_TRUE(append_rows(d.get(), 300, cols));
        EXPECT_TRUE(set_attr(f.get(), "answer", 42));
        d.reset();
        flush_commit(f.get());
    }
    EXPECT_FALSE(fs::exists(journal::journal_path(p)));
    return read_bytes(p);
}

// The uncommitted work a crashing writer does: more rows, a new dataset, new attributes,
// an attribute overwritten, part of it flushed to disk and part not.
void uncommitted_changes(hid_t f) {
    Dataset d(H5Dopen2(f, "rows", H5P_DEFAULT));
    append_rows(d.get(), 177, cols);
    Dataset other = create_rows(f, "other", 4, 8, false);
    append_rows(other.get(), 100, 4);
    set_attr(f, "answer", 7);
    set_attr(d.get(), "note", 1);
    H5Fflush(f, H5F_SCOPE_GLOBAL);
    append_rows(d.get(), 500, cols);
    set_attr(f, "late", 3);
}

// Forks a writer that opens `p` with the journal driver (and makes uncommitted changes when
// `change`), tells the parent it got there, then waits to be killed (`hold`) or _exits
// without closing the file, as a crash leaves it. Returns its pid once it got there, or -1.
pid_t fork_writer(const fs::path& p, bool change, bool hold) {
    int ready[2];
    if (::pipe(ready) != 0) return -1;
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::close(ready[0]);
        File f = open_journaled(p);
        if (!f.valid()) ::_exit(3);
        if (change) uncommitted_changes(f.get());
        const char c = 'x';
        if (::write(ready[1], &c, 1) != 1) ::_exit(4);
        if (hold) ::pause();
        ::_exit(0);  // no H5Fclose
    }
    ::close(ready[1]);
    char c = 0;
    const bool got_there = pid > 0 && ::read(ready[0], &c, 1) == 1;
    ::close(ready[0]);
    if (pid > 0 && !got_there) ::waitpid(pid, nullptr, 0);
    return got_there ? pid : -1;
}

// A writer that opens `p`, makes uncommitted changes and dies without closing: by _exit
// when `kill_it` is false, by SIGKILL from the parent otherwise.
void crash_writer(const fs::path& p, bool kill_it) {
    const pid_t pid = fork_writer(p, true, kill_it);
    ASSERT_GT(pid, 0);
    if (kill_it) ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    if (kill_it) {
        EXPECT_TRUE(WIFSIGNALED(status));
    } else {
        ASSERT_TRUE(WIFEXITED(status));
        EXPECT_EQ(WEXITSTATUS(status), 0);
    }
}

// Runs a command and returns its standard output.
std::string run_command(const std::string& cmd, int* exit_code) {
    std::string out;
    FILE* pipe = ::popen(cmd.c_str(), "r");
    if (pipe == nullptr) return out;
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
    const int status = ::pclose(pipe);
    *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return out;
}

class Journal : public ::testing::Test {
protected:
    void SetUp() override { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }
};

// ---- (1) plain use -----------------------------------------------------------------------

TEST_F(Journal, RoundTripReadableByDefaultDriverAndH5py) {
    TempDir dir("roundtrip");
    const fs::path p = dir / "store.h5";
    {
        File f = create_journaled(p);
        ASSERT_TRUE(f.valid());
        Dataset d = create_rows(f.get(), "rows", cols, 64, true);
        ASSERT_TRUE(append_rows(d.get(), 1000, cols));
        Group g(H5Gcreate2(f.get(), "meta", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        ASSERT_TRUE(set_attr(g.get(), "version", 3));
        ASSERT_TRUE(set_attr(f.get(), "answer", 42));
        g.reset();
        d.reset();
        flush_commit(f.get());
        EXPECT_FALSE(fs::exists(journal::journal_path(p)));
        // A second transaction on the same handle.
        d = Dataset(H5Dopen2(f.get(), "rows", H5P_DEFAULT));
        ASSERT_TRUE(append_rows(d.get(), 24, cols));
        d.reset();
        ASSERT_GE(H5Fflush(f.get(), H5F_SCOPE_GLOBAL), 0);
        EXPECT_TRUE(fs::exists(journal::journal_path(p)));  // overwrote committed metadata
        journal::commit(f.get());
        EXPECT_FALSE(fs::exists(journal::journal_path(p)));
        flush_commit(f.get());  // nothing to commit: fine
    }
    {
        // Reopen through the driver and append again.
        File f = open_journaled(p);
        ASSERT_TRUE(f.valid());
        Dataset d(H5Dopen2(f.get(), "rows", H5P_DEFAULT));
        ASSERT_TRUE(append_rows(d.get(), 1000, cols));
        d.reset();
        flush_commit(f.get());
    }
    EXPECT_FALSE(journal::recover(p));
    {
        File f = open_default(p);
        ASSERT_TRUE(f.valid());
        Dataset d(H5Dopen2(f.get(), "rows", H5P_DEFAULT));
        EXPECT_EQ(checked_rows(d.get(), cols), 2024);
        EXPECT_EQ(get_attr(f.get(), "answer"), 42);
        Group g(H5Gopen2(f.get(), "meta", H5P_DEFAULT));
        EXPECT_EQ(get_attr(g.get(), "version"), 3);
    }
    const std::string script =
        "import h5py, numpy as np\n"
        "f = h5py.File('" + p.string() + "', 'r')\n"
        "d = f['rows'][:]\n"
        "ok = bool((d.ravel() == np.arange(d.size)).all())\n"
        "print(d.shape[0], d.shape[1], int(f.attrs['answer']), int(f['meta'].attrs['version']), ok)\n";
    write_bytes(dir / "check.py", script);
    int code = -1;
    const std::string out =
        run_command("'" + std::string(FSTORE_PYTHON) + "' '" + (dir / "check.py").string() + "'", &code);
    EXPECT_EQ(code, 0);
    EXPECT_EQ(out, "2024 16 42 3 True\n");
}

TEST_F(Journal, CommitRejectsFilesOfOtherDrivers) {
    TempDir dir("otherdriver");
    const fs::path p = dir / "plain.h5";
    File f(H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    ASSERT_TRUE(f.valid());
    EXPECT_THROW(journal::commit(f.get()), fstore::UsageError);
}

// ---- (2) rollback ------------------------------------------------------------------------

TEST_F(Journal, CrashedWriterIsRolledBackByteForByte) {
    for (const bool kill_it : {false, true}) {
        SCOPED_TRACE(kill_it ? "SIGKILL" : "_exit");
        TempDir dir(kill_it ? "rollback-kill" : "rollback-exit");
        const fs::path p = dir / "store.h5";
        const std::string committed = make_committed(p);
        crash_writer(p, kill_it);
        ASSERT_TRUE(fs::exists(journal::journal_path(p)));
        ASSERT_NE(read_bytes(p), committed);  // the crash did change the file

        EXPECT_TRUE(journal::recover(p));
        EXPECT_FALSE(fs::exists(journal::journal_path(p)));
        EXPECT_EQ(read_bytes(p), committed);
        EXPECT_FALSE(journal::recover(p));  // nothing left to do
        File f = open_default(p);
        ASSERT_TRUE(f.valid());
        Dataset d(H5Dopen2(f.get(), "rows", H5P_DEFAULT));
        EXPECT_EQ(checked_rows(d.get(), cols), 300);
        EXPECT_EQ(get_attr(f.get(), "answer"), 42);
        EXPECT_LE(H5Aexists(f.get(), "late"), 0);
        EXPECT_LE(H5Lexists(f.get(), "other", H5P_DEFAULT), 0);
    }
}

TEST_F(Journal, OpeningForWriteRollsBackALeftJournal) {
    TempDir dir("open-rollback");
    const fs::path p = dir / "store.h5";
    make_committed(p);
    crash_writer(p, true);
    ASSERT_TRUE(fs::exists(journal::journal_path(p)));
    {
        File f = open_journaled(p);
        ASSERT_TRUE(f.valid());
        Dataset d(H5Dopen2(f.get(), "rows", H5P_DEFAULT));
        EXPECT_EQ(checked_rows(d.get(), cols), 300);
        EXPECT_EQ(get_attr(f.get(), "answer"), 42);
        EXPECT_LE(H5Aexists(f.get(), "late"), 0);
    }
    EXPECT_FALSE(fs::exists(journal::journal_path(p)));
    {
        File f = open_journaled(p);
        ASSERT_TRUE(f.valid());
        Dataset d(H5Dopen2(f.get(), "rows", H5P_DEFAULT));
        ASSERT_TRUE(append_rows(d.get(), 10, cols));
        d.reset();
        flush_commit(f.get());
    }
    File f = open_default(p);
    Dataset d(H5Dopen2(f.get(), "rows", H5P_DEFAULT));
    EXPECT_EQ(checked_rows(d.get(), cols), 310);
}

// A writer killed while it wrote the store through a symlink leaves the journal beside the
// real file, so opening the store by its real name rolls it back too.
TEST_F(Journal, WriterThroughASymlinkJournalsBesideTheRealFile) {
    TempDir dir("symlink");
    const fs::path real = dir / "real.h5";
    const fs::path link = dir / "link.h5";
    const std::string committed = make_committed(real);
    fs::create_symlink(real.filename(), link);
    EXPECT_EQ(journal::journal_path(link), fs::canonical(real).string() + ".journal");
    crash_writer(link, true);
    EXPECT_FALSE(fs::exists(dir / "link.h5.journal"));
    ASSERT_TRUE(fs::exists(journal::journal_path(real)));
    EXPECT_TRUE(journal::recover(real));
    EXPECT_EQ(read_bytes(real), committed);
    // A dangling link keeps its own name.
    fs::create_symlink("nowhere.h5", dir / "dangling.h5");
    EXPECT_EQ(journal::journal_path(dir / "dangling.h5"), dir / "dangling.h5.journal");
}

// A journal names its file's inode: after a kill, a store renamed in its directory still
// finds its journal and rolls back; a journal beside a file that is not its own (the store
// was replaced) is never applied to it.
TEST_F(Journal, JournalFollowsItsFileAndNeverTouchesAnother) {
    TempDir dir("inode");
    const fs::path p = dir / "store.h5";
    const fs::path moved = dir / "moved.h5";
    const std::string committed = make_committed(p);
    crash_writer(p, true);
    fs::rename(p, moved);
    EXPECT_EQ(journal::find_journal(moved), std::optional<fs::path>(journal::journal_path(p)));
    EXPECT_TRUE(journal::recover(moved));
    EXPECT_EQ(read_bytes(moved), committed);
    EXPECT_FALSE(fs::exists(journal::journal_path(p)));

    crash_writer(moved, true);  // moved.h5.journal now, for moved.h5's inode
    const fs::path other = dir / "other.h5";
    const std::string other_bytes = make_committed(other);
    fs::rename(other, moved);  // another file under the journal's name
    try {
        journal::recover(moved);
        ADD_FAILURE() << "a journal was applied to another file";
    } catch (const fstore::FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("another file"), std::string::npos) << e.what();
    }
    EXPECT_EQ(read_bytes(moved), other_bytes);
    EXPECT_FALSE(open_journaled(moved).valid()) << "a writer must not open it either";
    EXPECT_EQ(read_bytes(moved), other_bytes);
}

// After a kill, the torn store is renamed and a new one is made under the old name (keep
// the crashed one aside, start afresh): the journal under that name is the renamed store's
// and moves with it, whether the new file comes from H5Fcreate (the driver) or from
// elsewhere (release_journal_name, as FeatureStore's publish-by-link does). A journal whose
// file is gone is removed.
TEST_F(Journal, NewFileUnderARenamedStoresNameHandsItsJournalBack) {
    TempDir dir("hand-back");
    const fs::path p = dir / "store.h5";
    const fs::path moved = dir / "moved.h5";
    const fs::path jpath = journal::journal_path(p);
    for (const bool through_driver : {true, false}) {
        SCOPED_TRACE(through_driver ? "H5Fcreate" : "release_journal_name");
        fs::remove(p);
        const std::string committed = make_committed(p);
        crash_writer(p, true);
        ASSERT_TRUE(fs::exists(jpath));
        fs::rename(p, moved);
        if (through_driver) {
            File fresh = create_journaled(p);
            ASSERT_TRUE(fresh.valid());
        } else {
            write_bytes(p, "a new file");
            journal::release_journal_name(p);
        }
        EXPECT_FALSE(fs::exists(jpath));
        EXPECT_TRUE(fs::exists(journal::journal_path(moved)));
        EXPECT_TRUE(journal::recover(moved));
        EXPECT_EQ(read_bytes(moved), committed) << "the renamed store lost its rollback";
    }
    // Renamed while its writer still runs (here: a lock held on it): that writer will commit
    // by removing the journal under the old name, so the journal stays and the new file is
    // refused.
    fs::remove(p);
    fs::remove(moved);
    const std::string live = make_committed(p);
    crash_writer(p, true);
    fs::rename(p, moved);
    {
        const int writer = ::open(moved.c_str(), O_RDONLY);
        ASSERT_GE(writer, 0);
        ASSERT_EQ(::flock(writer, LOCK_EX), 0);
        write_bytes(p, "a new file");
        EXPECT_THROW(journal::release_journal_name(p), fstore::LockedError);
        EXPECT_FALSE(create_journaled(p).valid());
        EXPECT_TRUE(fs::exists(jpath));
        EXPECT_FALSE(fs::exists(journal::journal_path(moved)));
        ::close(writer);
    }
    EXPECT_TRUE(journal::recover(moved));
    EXPECT_EQ(read_bytes(moved), live);

    fs::remove(p);
    make_committed(p);
    crash_writer(p, true);
    fs::remove(p);  // the journal's own file is gone
    write_bytes(p, "a new file");
    journal::release_journal_name(p);
    EXPECT_FALSE(fs::exists(jpath));
    EXPECT_EQ(read_bytes(p), "a new file");
}

// A rollback by a user who may write the store but not its directory (the journal cannot be
// removed) is an I/O error naming the permissions (exit 10), not an internal error; it can be
// repeated once the directory is writable.
TEST_F(Journal, RollbackInAnUnwritableDirectoryIsAnIoError) {
    TempDir dir("unwritable");
    const fs::path locked = dir / "locked";
    fs::create_directory(locked);
    const fs::path p = locked / "store.h5";
    const std::string committed = make_committed(p);
    crash_writer(p, true);
    ASSERT_EQ(::chown(p.c_str(), 65534, 65534), ::geteuid() == 0 ? 0 : -1);
    fs::permissions(locked, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                fs::perms::others_read | fs::perms::others_exec);
    fs::permissions(p, fs::perms::all);
    if (::geteuid() != 0) fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec);
    const auto outcome = fstore::test::run_unprivileged([&] { journal::recover(p); });
    fs::permissions(locked, fs::perms::owner_all);
    EXPECT_EQ(outcome.exit_code, static_cast<int>(fstore::ExitCode::io)) << outcome.message;
    EXPECT_NE(outcome.message.find("permissions of its directory"), std::string::npos) << outcome.message;
    EXPECT_TRUE(journal::recover(p));
    EXPECT_EQ(read_bytes(p), committed);
}

// A deleted store's inode is often reused by the next file made in its directory; the
// journal's creation stamp tells the two apart. A journal whose stamp is not its file's
// (what a reused inode looks like) is neither found under another name nor applied under
// its own. (Where the file system keeps no creation time, the stamp is 0 and unchecked.)
TEST_F(Journal, JournalOfAnotherFileWithTheSameInodeIsNotApplied) {
    TempDir dir("reuse");
    const fs::path p = dir / "store.h5";
    const fs::path moved = dir / "moved.h5";
    const std::string committed = make_committed(p);
    crash_writer(p, true);
    const fs::path jpath = journal::journal_path(p);
    const std::string journal = read_bytes(jpath);
    struct statx stx {};
    const bool has_birth = ::statx(AT_FDCWD, p.c_str(), 0, STATX_BTIME, &stx) == 0 && (stx.stx_mask & STATX_BTIME);
    ASSERT_EQ(journal.substr(28, 4) != std::string(4, '\0'), has_birth) << "the stamp follows the file system";
    if (has_birth) {
        std::string other = journal;
        other[28] = static_cast<char>(other[28] ^ 0x5A);
        write_bytes(jpath, other);
        fs::rename(p, moved);
        EXPECT_EQ(journal::find_journal(moved), std::nullopt);
        fs::rename(moved, p);
        const std::string torn = read_bytes(p);
        EXPECT_THROW(journal::recover(p), fstore::FormatError);
        EXPECT_EQ(read_bytes(p), torn) << "a journal of another file was applied";
        write_bytes(jpath, journal);
    }
    EXPECT_TRUE(journal::recover(p));
    EXPECT_EQ(read_bytes(p), committed);
}

// With HDF5's own file locking off (HDF5_USE_FILE_LOCKING=FALSE, usual on cluster file
// systems) the driver still takes the writer lock: a second writer is refused.
TEST_F(Journal, WriterLockHoldsWithHdf5LockingOff) {
    TempDir dir("nolock");
    const fs::path p = dir / "store.h5";
    make_committed(p);
    ASSERT_EQ(::setenv("HDF5_USE_FILE_LOCKING", "FALSE", 1), 0);
    const pid_t pid = fork_writer(p, false, true);  // open, no transaction yet
    ASSERT_GT(pid, 0);
    EXPECT_FALSE(open_journaled(p).valid()) << "two writers at once";
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    EXPECT_TRUE(open_journaled(p).valid());
    ::unsetenv("HDF5_USE_FILE_LOCKING");
}

TEST_F(Journal, CleanCloseCommits) {
    TempDir dir("close-commits");
    const fs::path p = dir / "store.h5";
    make_committed(p);
    {
        File f = open_journaled(p);
        ASSERT_TRUE(f.valid());
        uncommitted_changes(f.get());
    }
    EXPECT_FALSE(fs::exists(journal::journal_path(p)));
    EXPECT_FALSE(journal::recover(p));
    File f = open_default(p);
    ASSERT_TRUE(f.valid());
    Dataset d(H5Dopen2(f.get(), "rows", H5P_DEFAULT));
    EXPECT_EQ(checked_rows(d.get(), cols), 300 + 177 + 500);
    EXPECT_EQ(get_attr(f.get(), "answer"), 7);
    EXPECT_EQ(get_attr(f.get(), "late"), 3);
}

TEST_F(Journal, CloseAfterAFailedWriteRollsBack) {
    TempDir dir("close-failed");
    const fs::path p = dir / "store.h5";
    const std::string committed = make_committed(p);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        // Writes past this size fail with EFBIG: the disk is "full" half-way through a batch.
        const rlimit limit{committed.size() + 65536, committed.size() + 65536};
        ::signal(SIGXFSZ, SIG_IGN);
        if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(8);
        File f = open_journaled(p);
        if (!f.valid()) ::_exit(3);
        Dataset d(H5Dopen2(f.get(), "rows", H5P_DEFAULT));
        bool failed = !append_rows(d.get(), 20000, cols);
        failed |= !set_attr(f.get(), "answer", 7);
        d.reset();
        failed |= H5Fflush(f.get(), H5F_SCOPE_GLOBAL) < 0;
        failed |= H5Fclose(f.get()) < 0;
        ::_exit(failed ? 0 : 9);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0) << "the write was expected to fail";
    EXPECT_FALSE(fs::exists(journal::journal_path(p)));
    EXPECT_EQ(read_bytes(p), committed);
}

// HDF5 often drops a write's error (a chunk written back as its dataset closes); the commit
// that follows still fails, and says why in the words of the first failed write.
TEST_F(Journal, CommitAfterAFailedWriteNamesTheFailure) {
    TempDir dir("commit-failed");
    const fs::path p = dir / "store.h5";
    const std::string committed = make_committed(p);
    const auto outcome = fstore::test::run_under_file_limit(committed.size() + 65536, [&] {
        File f = open_journaled(p);
        Dataset d(H5Dopen2(f.get(), "rows", H5P_DEFAULT));
        append_rows(d.get(), 20000, cols);  // fails, now or when the dataset closes
        d.reset();
        H5Fflush(f.get(), H5F_SCOPE_GLOBAL);
        journal::commit(f.get());
    });
    EXPECT_EQ(outcome.exit_code, static_cast<int>(fstore::ExitCode::io)) << outcome.message;
    EXPECT_NE(outcome.message.find("(write failed: File too large)"), std::string::npos) << outcome.message;
    EXPECT_EQ(read_bytes(p), committed);
}

TEST_F(Journal, RecoveryCanBeRepeatedAfterBeingInterrupted) {
    TempDir dir("repeat");
    const fs::path p = dir / "store.h5";
    const std::string committed = make_committed(p);
    crash_writer(p, true);
    const std::string crashed = read_bytes(p);
    const std::string journal_bytes = read_bytes(journal::journal_path(p));

    // Killed after restoring some of the old bytes (here: every other 4 KiB block of the
    // committed size) and truncating: the journal is still there.
    std::string partial = crashed;
    partial.resize(std::max(partial.size(), committed.size()));
    for (std::size_t at = 0; at < committed.size(); at += 8192)
        partial.replace(at, std::min<std::size_t>(4096, committed.size() - at),
                        committed.substr(at, 4096));
    partial.resize(committed.size());
    write_bytes(p, partial);
    EXPECT_TRUE(journal::recover(p));
    EXPECT_EQ(read_bytes(p), committed);

    // Killed after everything but removing the journal.
    write_bytes(journal::journal_path(p), journal_bytes);
    EXPECT_TRUE(journal::recover(p));
    EXPECT_EQ(read_bytes(p), committed);
}

// ---- (3) random SIGKILLs -----------------------------------------------------------------

TEST_F(Journal, RandomKillsLeaveAPrefixOfCommittedBatches) {
    TempDir dir("random");
    const fs::path p = dir / "store.h5";
    constexpr hsize_t batch = 64;
    constexpr hsize_t width = 8;
    {
        File f = create_journaled(p);
        ASSERT_TRUE(f.valid());
        Dataset d = create_rows(f.get(), "rows", width, 50, true);  // batches straddle chunks
        ASSERT_TRUE(set_attr(f.get(), "rows", 0));
        d.reset();
        flush_commit(f.get());
    }
    std::mt19937 rng(20240611);
    std::uniform_int_distribution<int> delay_us(0, 12000);
    long long verified = 0;
    int rolled_back = 0;
    constexpr int kills = 40;
    for (int round = 0; round < kills; ++round) {
        int report[2];
        ASSERT_EQ(::pipe(report), 0);
        const pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            ::close(report[0]);
            File f = open_journaled(p);
            if (!f.valid()) ::_exit(3);
            Dataset d(H5Dopen2(f.get(), "rows", H5P_DEFAULT));
            for (int i = 0; i < 100000; ++i) {
                if (!append_rows(d.get(), batch, width)) ::_exit(4);
                const long long n = static_cast<long long>(row_count(d.get()));
                if (!set_attr(f.get(), "rows", n)) ::_exit(5);
                if (H5Fflush(f.get(), H5F_SCOPE_GLOBAL) < 0) ::_exit(6);
                journal::commit(f.get());
                if (::write(report[1], &n, sizeof n) != sizeof n) ::_exit(7);
            }
            ::_exit(0);
        }
        ::close(report[1]);
        long long n = 0;
        long long reported = verified;  // the last commit the writer told us about
        // Every other round waits for one commit first, so that the writers make progress
        // however loaded the machine is; the others may kill before the first commit.
        if (round % 2 == 1 && ::read(report[0], &n, sizeof n) == sizeof n) reported = n;
        std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
        ::kill(pid, SIGKILL);
        int status = 0;
        ASSERT_EQ(::waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFSIGNALED(status)) << "writer failed with exit code "
                                         << WEXITSTATUS(status);
        while (::read(report[0], &n, sizeof n) == sizeof n) reported = n;
        ::close(report[0]);

        if (journal::recover(p)) ++rolled_back;
        File f = open_default(p);
        ASSERT_TRUE(f.valid()) << "round " << round;
        Dataset d(H5Dopen2(f.get(), "rows", H5P_DEFAULT));
        const long long rows = checked_rows(d.get(), width);
        ASSERT_GE(rows, 0) << "round " << round << ": content is not r * cols + c";
        EXPECT_EQ(rows % static_cast<long long>(batch), 0) << "round " << round;
        EXPECT_EQ(get_attr(f.get(), "rows"), rows) << "round " << round;
        // Every reported commit survived; at most the batch being reported may be extra.
        EXPECT_GE(rows, reported) << "round " << round;
        EXPECT_LE(rows, reported + static_cast<long long>(batch)) << "round " << round;
        verified = rows;
    }
    std::printf("[ journal  ] %d kills, %d rolled back, %lld rows committed\n", kills,
                rolled_back, verified);
    EXPECT_GT(rolled_back, 0);  // kills did land inside transactions
    EXPECT_GT(verified, 0);     // and the writers made progress
}

// ---- (4) torn tails, (5) bad journals ----------------------------------------------------

std::string record_header(std::uint64_t offset, std::uint64_t length, std::uint32_t crc) {
    std::string h(24, '\0');
    auto put = [&h](std::size_t at, std::uint64_t v, int bytes) {
        for (int i = 0; i < bytes; ++i) h[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
    };
    put(0, 0x52454331, 4);  // "REC1", as in journal.cpp's format comment
    put(4, crc, 4);
    put(8, offset, 8);
    put(16, length, 8);
    return h;
}

class JournalTail : public Journal {
protected:
    void SetUp() override {
        Journal::SetUp();
        committed_ = make_committed(p_);
        crash_writer(p_, false);
        ASSERT_TRUE(fs::exists(jp_));
    }
    void expect_rolled_back() {
        EXPECT_TRUE(journal::recover(p_));
        EXPECT_EQ(read_bytes(p_), committed_);
        EXPECT_FALSE(fs::exists(jp_));
    }
    TempDir dir_{"tail-" + std::string(
                               ::testing::UnitTest::GetInstance()->current_test_info()->name())};
    fs::path p_ = dir_ / "store.h5";
    fs::path jp_ = journal::journal_path(p_);
    std::string committed_;
};

TEST_F(JournalTail, RecordCutShortIsIgnored) {
    // Claims 4096 bytes of the superblock region, holds 100: never followed by its write.
    append_bytes(jp_, record_header(0, 4096, 0) + std::string(100, '\xab'));
    expect_rolled_back();
}

TEST_F(JournalTail, LastRecordWithBadChecksumIsIgnored) {
    append_bytes(jp_, record_header(0, 64, 0x12345678) + std::string(64, '\xab'));
    expect_rolled_back();
}

TEST_F(JournalTail, PartialRecordHeaderIsIgnored) {
    append_bytes(jp_, record_header(0, 64, 0).substr(0, 10));
    expect_rolled_back();
}

TEST_F(JournalTail, ZeroFilledTailIsIgnored) {
    append_bytes(jp_, std::string(4096, '\0'));
    expect_rolled_back();
}

TEST_F(JournalTail, CorruptionBeforeTheTailIsAFormatError) {
    append_bytes(jp_, record_header(0, 64, 0x12345678) + std::string(64, '\xab') +
                          std::string(100, '\x55'));
    const std::string before = read_bytes(p_);
    EXPECT_THROW(journal::recover(p_), fstore::FormatError);
    EXPECT_EQ(read_bytes(p_), before);  // nothing applied
    EXPECT_TRUE(fs::exists(jp_));
}

TEST_F(JournalTail, HeaderOnlyJournalTruncatesToCommittedSize) {
    fs::resize_file(jp_, 32);
    ASSERT_GT(fs::file_size(p_), committed_.size());
    EXPECT_TRUE(journal::recover(p_));
    EXPECT_EQ(fs::file_size(p_), committed_.size());
    EXPECT_FALSE(fs::exists(jp_));
}

TEST_F(JournalTail, TornHeaderMeansTheFileWasNotTouched) {
    fs::resize_file(jp_, 20);
    const std::string before = read_bytes(p_);
    EXPECT_TRUE(journal::recover(p_));
    EXPECT_EQ(read_bytes(p_), before);
    EXPECT_FALSE(fs::exists(jp_));
}

TEST_F(Journal, BadMagicIsAFormatErrorNamingTheJournal) {
    TempDir dir("badmagic");
    const fs::path p = dir / "store.h5";
    const std::string committed = make_committed(p);
    write_bytes(journal::journal_path(p), "NOTAJRNL" + std::string(100, '\x01'));
    try {
        journal::recover(p);
        FAIL() << "expected FormatError";
    } catch (const fstore::FormatError& e) {
        const std::string message = e.what();
        EXPECT_NE(message.find(journal::journal_path(p).string()), std::string::npos) << message;
        EXPECT_NE(message.find("bad magic"), std::string::npos) << message;
        EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    }
    EXPECT_EQ(read_bytes(p), committed);
    EXPECT_TRUE(fs::exists(journal::journal_path(p)));
    // Opening for writing refuses too, rather than extending a file it cannot vouch for.
    EXPECT_FALSE(open_journaled(p).valid());
}

// ---- (6) locking -------------------------------------------------------------------------

TEST_F(Journal, SecondWriterIsLockedOut) {
    TempDir dir("lock");
    const fs::path p = dir / "store.h5";
    make_committed(p);
    int ready[2];
    int go[2];
    ASSERT_EQ(::pipe(ready), 0);
    ASSERT_EQ(::pipe(go), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ::close(ready[0]);
        ::close(go[1]);
        File f = open_journaled(p);
        if (!f.valid()) ::_exit(3);
        char c = 'o';
        if (::write(ready[1], &c, 1) != 1) ::_exit(4);  // open, no transaction yet
        if (::read(go[0], &c, 1) != 1) ::_exit(5);
        uncommitted_changes(f.get());
        c = 'w';
        if (::write(ready[1], &c, 1) != 1) ::_exit(6);  // in a transaction
        ::pause();
        ::_exit(0);
    }
    ::close(ready[1]);
    ::close(go[0]);
    char c = 0;
    for (const char stage : {'o', 'w'}) {
        SCOPED_TRACE(std::string("stage ") + stage);
        ASSERT_EQ(::read(ready[0], &c, 1), 1);
        ASSERT_EQ(c, stage);
        EXPECT_FALSE(open_journaled(p).valid());
        EXPECT_FALSE(open_default(p, H5F_ACC_RDWR).valid());
        EXPECT_FALSE(open_default(p, H5F_ACC_RDONLY).valid());
        if (stage == 'w') {
            EXPECT_THROW(journal::recover(p), fstore::LockedError);
            EXPECT_TRUE(fs::exists(journal::journal_path(p)));  // left alone
        } else {
            ASSERT_EQ(::write(go[1], "g", 1), 1);
        }
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ::close(ready[0]);
    ::close(go[1]);
    EXPECT_TRUE(journal::recover(p));
    EXPECT_TRUE(open_journaled(p).valid());
}

TEST_F(Journal, LockHeldByAnyDescriptorBlocksOpen) {
    TempDir dir("flock");
    const fs::path p = dir / "store.h5";
    make_committed(p);
    const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
    EXPECT_FALSE(open_journaled(p).valid());
    ::flock(fd, LOCK_UN);
    EXPECT_TRUE(open_journaled(p).valid());
    ::close(fd);
}

TEST_F(Journal, DurableModeRoundTrip) {
    TempDir dir("durable");
    const fs::path p = dir / "store.h5";
    {
        File f = create_journaled(p, true);
        ASSERT_TRUE(f.valid());
        Dataset d = create_rows(f.get(), "rows", cols, 50, false);
        for (int i = 0; i < 5; ++i) {
            ASSERT_TRUE(append_rows(d.get(), 64, cols));
            flush_commit(f.get());
        }
    }
    File f = open_default(p);
    Dataset d(H5Dopen2(f.get(), "rows", H5P_DEFAULT));
    EXPECT_EQ(checked_rows(d.get(), cols), 320);
}

// ---- overhead (printed, not asserted) -----------------------------------------------------

// Appends `batches` batches of 64 rows of `row_shape` uint16 values (a chunk per batch),
// flushing (and committing) after each batch. Returns seconds.
double append_seconds(const fs::path& p, hid_t fapl, bool journaled, hsize_t batches,
                      hsize_t row_values) {
    constexpr hsize_t batch = 64;
    const auto start = std::chrono::steady_clock::now();
    File f(H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl));
    EXPECT_TRUE(f.valid());
    const hsize_t dims[2] = {0, row_values};
    const hsize_t maxdims[2] = {H5S_UNLIMITED, row_values};
    Space space(H5Screate_simple(2, dims, maxdims));
    Plist dcpl(H5Pcreate(H5P_DATASET_CREATE));
    const hsize_t chunk[2] = {std::min<hsize_t>(batch, (4u << 20) / (row_values * 2)), row_values};
    H5Pset_chunk(dcpl.get(), 2, chunk);
    Dataset d(H5Dcreate2(f.get(), "rows", H5T_STD_U16LE, space.get(), H5P_DEFAULT, dcpl.get(),
                         H5P_DEFAULT));
    if (journaled) flush_commit(f.get());
    std::vector<std::uint16_t> values(batch * row_values);
    for (hsize_t b = 0; b < batches; ++b) {
        for (std::size_t i = 0; i < values.size(); i += 512)
            values[i] = static_cast<std::uint16_t>(b + i);
        const hsize_t new_dims[2] = {(b + 1) * batch, row_values};
        H5Dset_extent(d.get(), new_dims);
        Space file_space(H5Dget_space(d.get()));
        const hsize_t at[2] = {b * batch, 0};
        const hsize_t count[2] = {batch, row_values};
        H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, at, nullptr, count, nullptr);
        Space mem_space(H5Screate_simple(2, count, nullptr));
        H5Dwrite(d.get(), H5T_NATIVE_UINT16, mem_space.get(), file_space.get(), H5P_DEFAULT,
                 values.data());
        H5Fflush(f.get(), H5F_SCOPE_GLOBAL);
        if (journaled) journal::commit(f.get());
    }
    EXPECT_EQ(row_count(d.get()), batches * batch);
    d.reset();
    f.reset();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST_F(Journal, OverheadVersusSec2) {
    TempDir dir("bench");
    Plist sec2(H5Pcreate(H5P_FILE_ACCESS));
    H5Pset_fapl_sec2(sec2.get());
    Plist plain(journal::file_access_plist(false));
    // Rows of one token (1152 halves): many small commits, the worst case for the journal.
    // (Rows of a whole image, 729 x 1152 halves, make 2 commits for 200 MB: no overhead.)
    const struct {
        const char* what;
        hsize_t row_values;
    } cases[] = {{"token rows (2.3 KB)", 1152}};
    for (const auto& c : cases) {
        const hsize_t batch_bytes = 64 * c.row_values * 2;
        const hsize_t batches = (200'000'000 + batch_bytes - 1) / batch_bytes;
        const double mb = static_cast<double>(batches * batch_bytes) / 1e6;
        const double t_sec2 = append_seconds(dir / "sec2.h5", sec2.get(), false, batches,
                                             c.row_values);
        fs::remove(dir / "sec2.h5");
        const double t_journal = append_seconds(dir / "journal.h5", plain.get(), true, batches,
                                                c.row_values);
        EXPECT_GT(static_cast<double>(fs::file_size(dir / "journal.h5")), mb * 1e6);
        EXPECT_FALSE(fs::exists(journal::journal_path(dir / "journal.h5")));
        fs::remove(dir / "journal.h5");
        std::printf("[ journal  ] %s: %.0f MB in %llu batches of 64 rows, flush per batch:\n"
                    "[ journal  ]   sec2            %.2f s (%4.0f MB/s)\n"
                    "[ journal  ]   journal+commit  %.2f s (%4.0f MB/s): %+.0f%%, %+.0f us/commit\n",
                    c.what, mb, static_cast<unsigned long long>(batches), t_sec2, mb / t_sec2,
                    t_journal, mb / t_journal, 100.0 * (t_journal / t_sec2 - 1.0),
                    1e6 * (t_journal - t_sec2) / static_cast<double>(batches));
    }
}

}  // namespace
