// A disk that fails to read (EIO) is an I/O error (exit 10), not a damaged file (exit 4).
// This binary defines pread/pread64 itself, which HDF5's sec2 driver then calls instead of
// libc's: it fails them with EIO over one byte range and forwards every other call. Its
// own binary, so that no other test runs with the interposer.
#include <dlfcn.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fstore/error.hpp"
#include "fstore/feature_store.hpp"
#include "fstore/h5.hpp"
#include "fstore/half.hpp"

namespace {

std::atomic<long long> fail_from{-1}, fail_to{-1};  // [from, to): reads there fail with fail_errno
std::atomic<int> fail_errno{EIO};

bool fails(off_t offset, std::size_t count) {
    return fail_from >= 0 && offset < fail_to && static_cast<long long>(offset) + static_cast<long long>(count) > fail_from;
}

}  // namespace

extern "C" ssize_t pread64(int fd, void* buffer, std::size_t count, off_t offset) {
    using Real = ssize_t (*)(int, void*, std::size_t, off_t);
    static const Real real = reinterpret_cast<Real>(::dlsym(RTLD_NEXT, "pread64"));
    if (fails(offset, count)) {
        errno = fail_errno;
        return -1;
    }
    return real(fd, buffer, count, offset);
}

extern "C" ssize_t pread(int fd, void* buffer, std::size_t count, off_t offset) {
    return pread64(fd, buffer, count, offset);
}

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr std::int64_t N = 10;  // rows of the store each test writes

void write_small_store(const fs::path& path) {
    constexpr std::int64_t D = 8, T = 5;
    auto store = fstore::FeatureStore::open_or_create(path, {D, T});
    std::vector<std::uint16_t> cls(N * D, fstore::float_to_half(0.5f)), tokens(N * T * D, fstore::float_to_half(1.f));
    std::vector<std::string> splits(N, "train");
    fstore::RowBatch batch;
    batch.rows = N;
    batch.image_features = cls.data();
    batch.image_token_features = tokens.data();
    batch.splits = &splits;
    store.append_batch(batch);
}

TEST(ReadErrors, DiskReadFailureIsAnIoErrorNamingTheRows) {
    const fs::path path = fs::temp_directory_path() / ("fstore_read_errors_" + std::to_string(::getpid()) + ".h5");
    fs::remove(path);
    write_small_store(path);
    haddr_t address = 0;
    hsize_t size = 0;
    {
        fstore::h5::init();
        fstore::h5::File file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "open");
        auto dataset = fstore::h5::open_dataset(file, "image_features");
        const hsize_t origin[2] = {0, 0};
        unsigned mask = 0;
        ASSERT_GE(H5Dget_chunk_info_by_coord(dataset, origin, &mask, &address, &size), 0);
    }
    const auto store = fstore::FeatureStore::open(path);
    fail_from = static_cast<long long>(address);
    fail_to = static_cast<long long>(address + size);
    // A failing disk, and a network file system that went away: not damage either way.
    for (const int error : {EIO, ENOTCONN}) {
        fail_errno = error;
        try {
            store.read_rows(fstore::Column::image_features, {2, 3});
            ADD_FAILURE() << "no error";
        } catch (const fstore::IoError& e) {
            EXPECT_THAT(e.what(), HasSubstr("cannot read rows 2..3 of /image_features"));
            EXPECT_THAT(e.what(), HasSubstr("the file system failed to read it (" + std::string(std::strerror(error)) +
                                            "); check the disk (or the network file system), then retry"));
        }
    }
    fail_from = fail_to = -1;
    EXPECT_EQ(store.read_rows(fstore::Column::image_features, {2, 3}).shape[0], 2);  // the same rows read fine now
    fs::remove(path);
}

// The heap check reads string heaps itself: a disk failing there is still an I/O error
// (HDF5's own read reports it), not a damaged heap.
TEST(ReadErrors, DiskReadFailureInAStringHeapIsAnIoError) {
    const fs::path path = fs::temp_directory_path() / ("fstore_read_errors_heap_" + std::to_string(::getpid()) + ".h5");
    fs::remove(path);
    write_small_store(path);
    std::string bytes;
    {
        std::ifstream in(path, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    const auto heap = bytes.rfind("GCOL");
    ASSERT_NE(heap, std::string::npos);
    fail_errno = EIO;
    fail_from = static_cast<long long>(heap);
    fail_to = static_cast<long long>(heap + 16);
    try {
        (void)fstore::FeatureStore::open(path).read_all_splits();
        ADD_FAILURE() << "no error";
    } catch (const fstore::IoError& e) {
        EXPECT_THAT(e.what(), HasSubstr(std::strerror(EIO)));
        EXPECT_THAT(e.what(), Not(HasSubstr("heap holding its strings is damaged")));
    } catch (const fstore::Error& e) {
        ADD_FAILURE() << "not an I/O error: " << e.what();
    }
    fail_from = fail_to = -1;
    EXPECT_EQ(fstore::FeatureStore::open(path).read_all_splits().size(), static_cast<std::size_t>(N));
    fs::remove(path);
}

}  // namespace
