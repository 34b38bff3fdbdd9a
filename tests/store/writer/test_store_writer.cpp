// FeatureStore::append_batch through the chunk writer: values round-trip for any batch
// sizes, the incompressible-data detection, and crash safety under SIGKILL.
// Byte-level equality with HDF5's own chunks is checked in test_writer_interop.py (h5py).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fstore/feature_store.hpp"

namespace fs = std::filesystem;
using fstore::FeatureStore;

namespace {

constexpr std::int64_t T = 16, D = 96;  // a token row is 3 KB, a token chunk 12 KB

struct TempDir {
    fs::path path;
    TempDir() {
        path = fs::temp_directory_path() /
               ("fstore-writer-" + std::to_string(::getpid()) + "-" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() { fs::remove_all(path); }
};

// Row i's features: compressible (zeros, one marker) in some 8-row stretches, random bits in
// others, so a store mixes chunks that shrink and chunks HDF5 stores raw.
void fill_row(std::int64_t i, std::uint16_t* tokens, std::uint16_t* cls) {
    const bool random = (i / 8) % 2 == 1;
    std::mt19937 rng(static_cast<unsigned>(i));
    for (std::int64_t k = 0; k < T * D; ++k) tokens[k] = random ? static_cast<std::uint16_t>(rng()) : 0;
    for (std::int64_t k = 0; k < D; ++k) cls[k] = random ? static_cast<std::uint16_t>(rng()) : 0;
    tokens[0] = static_cast<std::uint16_t>(i + 1);
    cls[D - 1] = static_cast<std::uint16_t>(i + 7);
}

void append_rows(FeatureStore& store, std::int64_t count) {
    const std::int64_t first = store.rows();
    std::vector<std::uint16_t> tokens(static_cast<std::size_t>(count * T * D));
    std::vector<std::uint16_t> cls(static_cast<std::size_t>(count * D));
    std::vector<std::int64_t> labels(static_cast<std::size_t>(count));
    std::vector<std::string> splits(static_cast<std::size_t>(count));
    for (std::int64_t r = 0; r < count; ++r) {
        fill_row(first + r, tokens.data() + r * T * D, cls.data() + r * D);
        labels[static_cast<std::size_t>(r)] = (first + r) % 8;
        splits[static_cast<std::size_t>(r)] = (first + r) % 3 == 0 ? "test" : "train";
    }
    fstore::RowBatch batch;
    batch.rows = count;
    batch.image_features = cls.data();
    batch.image_token_features = tokens.data();
    batch.labels = labels.data();
    batch.splits = &splits;
    store.append_batch(batch);
}

// Every row of the store holds what fill_row wrote for it; returns the mismatch or "".
std::string check_rows(const FeatureStore& store) {
    const std::int64_t n = store.rows();
    std::vector<std::int64_t> all(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) all[static_cast<std::size_t>(i)] = i;
    if (n == 0) return "";
    const auto tokens = store.read_rows(fstore::Column::image_token_features, all);
    const auto cls = store.read_rows(fstore::Column::image_features, all);
    const auto ids = store.read_rows(fstore::Column::ids, all);
    std::vector<std::uint16_t> want_tokens(static_cast<std::size_t>(T * D));
    std::vector<std::uint16_t> want_cls(static_cast<std::size_t>(D));
    for (std::int64_t i = 0; i < n; ++i) {
        fill_row(i, want_tokens.data(), want_cls.data());
        if (std::memcmp(tokens.data<std::uint16_t>() + i * T * D, want_tokens.data(),
                        want_tokens.size() * 2) != 0)
            return "token features of row " + std::to_string(i) + " differ";
        if (std::memcmp(cls.data<std::uint16_t>() + i * D, want_cls.data(), want_cls.size() * 2) != 0)
            return "CLS features of row " + std::to_string(i) + " differ";
        if (ids.data<std::int64_t>()[i] != i) return "id of row " + std::to_string(i) + " differs";
    }
    if (store.split_counts() != store.split_counts_from_data()) return "split_counts disagree with /split";
    return "";
}

fstore::StoreLayout layout() {
    fstore::StoreLayout l;
    l.dim = D;
    l.image_tokens = T;
    return l;
}

}  // namespace

TEST(StoreWriter, UnalignedBatchesAndResumeRoundTrip) {
    TempDir dir;
    const fs::path path = dir.path / "s.h5";
    {
        auto store = FeatureStore::open_or_create(path, layout());
        append_rows(store, 6);  // ends mid-chunk: the next append merges
    }
    auto store = FeatureStore::open(path, FeatureStore::Access::read_write);
    for (std::int64_t b : {3, 5, 64, 67, 1, 4}) append_rows(store, b);
    EXPECT_EQ(store.rows(), 6 + 3 + 5 + 64 + 67 + 1 + 4);
    EXPECT_EQ(check_rows(store), "");
    const auto stats = store.writer_stats();
    EXPECT_GT(stats.merged_chunks, 0u);
    EXPECT_GT(stats.compressed_chunks, 0u);  // the zero stretches
    EXPECT_GT(stats.raw_chunks, 0u);         // the random stretches
    EXPECT_LE(stats.bytes_out, stats.bytes_in);
}

TEST(StoreWriter, TruncateThenAppendReadsBack) {
    TempDir dir;
    const fs::path path = dir.path / "s.h5";
    auto store = FeatureStore::open_or_create(path, layout());
    append_rows(store, 70);
    store.truncate_rows(9);  // mid-chunk for both feature columns
    append_rows(store, 13);
    EXPECT_EQ(store.rows(), 22);
    EXPECT_EQ(check_rows(store), "");
}

TEST(StoreWriter, DetectsIncompressibleDataAndRechecks) {
    TempDir dir;
    const fs::path path = dir.path / "s.h5";
    auto store = FeatureStore::open_or_create(path, layout());
    fstore::ChunkWriterOptions options;
    options.threads = 1;  // decisions in chunk order: exact counts below
    options.probe_chunks = 3;
    options.recheck_every = 5;
    store.set_writer_options(options);
    // fill_row: rows 0..7 zeros, 8..15 random bits, ...: token chunks come in pairs.
    append_rows(store, 128);
    const auto s = store.writer_stats();
    EXPECT_EQ(s.chunks, 32u + 2u);  // 32 token chunks + 2 CLS chunks
    // Random chunks come in pairs between zero pairs: 2 < probe_chunks, so never skipping.
    EXPECT_EQ(s.skipped_attempts, 0u);
    EXPECT_EQ(check_rows(store), "");

    // Pure random bits: after 3 failed attempts it stops trying, and tries 1 in 5 after.
    auto random_store = FeatureStore::open_or_create(dir.path / "r.h5", layout());
    random_store.set_writer_options(options);
    const std::int64_t rows = 64;
    std::vector<std::uint16_t> tokens(static_cast<std::size_t>(rows * T * D));
    std::vector<std::uint16_t> cls(static_cast<std::size_t>(rows * D));
    std::mt19937 rng(5);
    for (auto& v : tokens) v = static_cast<std::uint16_t>(rng());
    for (auto& v : cls) v = static_cast<std::uint16_t>(rng());
    std::vector<std::string> splits(rows, "train");
    fstore::RowBatch batch;
    batch.rows = rows;
    batch.image_features = cls.data();
    batch.image_token_features = tokens.data();
    batch.splits = &splits;
    random_store.append_batch(batch);
    const auto r = random_store.writer_stats();
    // 16 token chunks: 3 tried, then of the 13 left every 5th is tried (2): 11 skipped.
    EXPECT_EQ(r.raw_chunks, r.chunks);
    EXPECT_EQ(r.skipped_attempts, 11u);
    const auto back = random_store.read_rows(fstore::Column::image_token_features, {0, 37, 63});
    EXPECT_EQ(std::memcmp(back.data<std::uint16_t>() + 2 * T * D, tokens.data() + 63 * T * D, T * D * 2), 0);
}

// A child appends through the chunk writer (batches of 5: every batch rewrites a committed
// partial chunk, the journaled case) and is SIGKILLed at random moments; each reopen must
// show whole batches only, every row intact, split_counts in step. Every third round waits
// for the child's first commit (it reports each one through a pipe) before the random delay,
// so some rounds make progress however slow the machine (ASan, a loaded CI runner).
TEST(StoreWriter, SigkillLeavesWholeBatches) {
    TempDir dir;
    const fs::path path = dir.path / "s.h5";
    std::mt19937 rng(1234);
    std::uniform_int_distribution<int> delay_ms(5, 120);
    std::int64_t last_rows = 0;
    int progressed = 0;
    constexpr int kills = 12;
    for (int round = 0; round < kills; ++round) {
        int commits[2];
        ASSERT_EQ(::pipe(commits), 0);
        const pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            ::close(commits[0]);
            try {
                auto store = FeatureStore::open_or_create(path, layout());
                for (;;) {
                    append_rows(store, 5);
                    const char committed = 1;
                    (void)!::write(commits[1], &committed, 1);
                }
            } catch (...) {
                ::_exit(3);
            }
        }
        ::close(commits[1]);
        if (round % 3 == 0) {
            pollfd first_commit{commits[0], POLLIN, 0};
            EXPECT_EQ(::poll(&first_commit, 1, 120000), 1) << "no commit within 120 s in round " << round;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
        ::kill(pid, SIGKILL);
        ::close(commits[0]);
        int status = 0;
        ASSERT_EQ(::waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
        if (!fs::exists(path)) continue;  // killed before the store was created
        auto store = FeatureStore::open(path, FeatureStore::Access::read_write);
        SCOPED_TRACE("round " + std::to_string(round) + ", rows " + std::to_string(store.rows()));
        EXPECT_EQ(store.rows() % 5, 0);
        EXPECT_GE(store.rows(), last_rows);  // committed batches never disappear
        if (store.rows() > last_rows) ++progressed;
        last_rows = store.rows();
        EXPECT_EQ(check_rows(store), "");
    }
    EXPECT_GT(progressed, 0) << "the child never committed a batch";
}

// Regression: a chunk that stops shrinking as rows fill it (compressed while zero padding
// remains, raw once full) is rewritten raw at a new address; HDF5's per-dataset "last chunk"
// cache kept the old address and filter mask, so the next append's merge (and read_rows in
// this process) decompressed raw bytes and failed. One row per append forces many rewrites.
TEST(StoreWriter, ChunkTurningRawIsReadBackInTheSameProcess) {
    TempDir dir;
    auto store = FeatureStore::open_or_create(dir.path / "s.h5", layout());
    std::mt19937 rng(5);
    std::vector<std::uint16_t> want_cls;
    const std::vector<std::string> splits{"train"};
    for (int r = 0; r < 70; ++r) {
        std::vector<std::uint16_t> tokens(static_cast<std::size_t>(T * D)), cls(static_cast<std::size_t>(D));
        for (auto& h : tokens) h = static_cast<std::uint16_t>(rng() & 0x7bff);
        for (auto& h : cls) h = static_cast<std::uint16_t>(rng() & 0x7bff);
        want_cls.insert(want_cls.end(), cls.begin(), cls.end());
        fstore::RowBatch batch;
        batch.rows = 1;
        batch.image_features = cls.data();
        batch.image_token_features = tokens.data();
        batch.splits = &splits;
        ASSERT_NO_THROW(store.append_batch(batch)) << "append of row " << r;
    }
    std::vector<std::int64_t> all(70);
    std::iota(all.begin(), all.end(), 0);
    const auto cls = store.read_rows(fstore::Column::image_features, all);
    ASSERT_EQ(cls.bytes.size(), want_cls.size() * 2);
    EXPECT_EQ(std::memcmp(cls.bytes.data(), want_cls.data(), cls.bytes.size()), 0);
    EXPECT_GT(store.writer_stats().raw_chunks, 0u);
}
