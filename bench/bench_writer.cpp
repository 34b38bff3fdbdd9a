// fstore_bench_writer: appends N rows of ConceptCLIP-shaped features through
// FeatureStore::append_batch (the parallel chunk writer) and reports MB/s and peak RSS.
//
// usage: fstore_bench_writer OUT.h5 POOL.bin ROWS BATCH [--threads N] [--no-detect]
//                            [--templates] [--tokens T] [--dim D]
// POOL.bin holds P rows of T×D half floats (written by bench/gen_pool.py); batch k is the
// BATCH rows of the pool starting at row (k * 3) % (P - BATCH + 1), so chunks differ from
// batch to batch without generating data inside the timed loop. The CLS row is the first D
// values of the row. The time includes creating the store and an fdatasync of the file at
// the end (what the disk really took). --templates also writes BloodMNIST-like template
// groups (for the read benchmark's `fetch`). Prints one JSON line.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "fstore/error.hpp"
#include "fstore/feature_store.hpp"

namespace fs = std::filesystem;

int main(int argc, char** argv) try {
    if (argc < 5) {
        std::cerr << "usage: fstore_bench_writer OUT.h5 POOL.bin ROWS BATCH [--threads N] "
                     "[--no-detect] [--templates] [--tokens T] [--dim D]\n";
        return 2;
    }
    const fs::path out = argv[1];
    const fs::path pool_path = argv[2];
    const std::int64_t rows = std::stoll(argv[3]);
    const std::int64_t batch_rows = std::stoll(argv[4]);
    fstore::ChunkWriterOptions options;
    fstore::StoreLayout layout;  // 729 × 1152
    bool templates = false;
    for (int i = 5; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--threads") options.threads = std::stoi(argv[++i]);
        else if (arg == "--no-detect") options.detect_incompressible = false;
        else if (arg == "--templates") templates = true;
        else if (arg == "--tokens") layout.image_tokens = std::stoll(argv[++i]);
        else if (arg == "--dim") layout.dim = std::stoll(argv[++i]);
        else throw fstore::UsageError("unknown option '" + arg + "'");
    }
    const auto row_values = static_cast<std::size_t>(layout.image_tokens * layout.dim);
    std::vector<std::uint16_t> pool(static_cast<std::size_t>(fs::file_size(pool_path) / 2));
    std::ifstream(pool_path, std::ios::binary)
        .read(reinterpret_cast<char*>(pool.data()), static_cast<std::streamsize>(pool.size() * 2));
    const auto pool_rows = static_cast<std::int64_t>(pool.size() / row_values);
    if (pool_rows < batch_rows)
        throw fstore::UsageError("pool has " + std::to_string(pool_rows) + " rows, fewer than a batch");
    std::vector<std::uint16_t> cls(static_cast<std::size_t>(pool_rows * layout.dim));
    for (std::int64_t r = 0; r < pool_rows; ++r)
        std::copy_n(pool.data() + r * static_cast<std::int64_t>(row_values), layout.dim,
                    cls.data() + r * layout.dim);

    fs::remove(out);
    const auto t0 = std::chrono::steady_clock::now();
    std::int64_t written = 0;
    fstore::ChunkWriterStats stats;
    {
        auto store = fstore::FeatureStore::open_or_create(out, layout);
        store.set_writer_options(options);
        std::vector<std::int64_t> labels;
        std::vector<std::string> splits;
        for (std::int64_t k = 0; written < rows; ++k) {
            const std::int64_t n = std::min(batch_rows, rows - written);
            const std::int64_t first = (k * 3) % (pool_rows - n + 1);
            labels.assign(static_cast<std::size_t>(n), k % 8);
            splits.assign(static_cast<std::size_t>(n), written < rows * 7 / 10 ? "train" : "test");
            fstore::RowBatch batch;
            batch.rows = n;
            batch.image_features = cls.data() + first * layout.dim;
            batch.image_token_features = pool.data() + first * static_cast<std::int64_t>(row_values);
            batch.labels = labels.data();
            batch.splits = &splits;
            store.append_batch(batch);
            written += n;
        }
        stats = store.writer_stats();
        if (templates) {
            // 9 concept templates × 15 texts, 3 label templates × 8, tokens of 24 positions.
            for (int t = 0; t < 12; ++t) {
                const bool concept = t < 9;
                fstore::TemplateRecord rec;
                const int k = concept ? 15 : 8;
                for (int i = 0; i < k; ++i) rec.texts.push_back("text " + std::to_string(t) + "/" + std::to_string(i));
                rec.text_tokens = 24;
                rec.text_features.assign(static_cast<std::size_t>(k * layout.dim), 0.5f + t);
                rec.text_token_features.assign(static_cast<std::size_t>(k * 24 * layout.dim), 0.25f * t);
                char id[32];
                std::snprintf(id, sizeof id, "%s_prompts_t%02d", concept ? "concept" : "label",
                              concept ? t + 1 : t - 8);
                store.write_template(id, rec);
            }
        }
    }
    const int fd = ::open(out.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ::fdatasync(fd);
        ::close(fd);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // Payload: what the reference writes per row (tokens + CLS halves, id + label int64).
    const double payload = static_cast<double>(written) *
                           (static_cast<double>(row_values + static_cast<std::size_t>(layout.dim)) * 2 + 16);
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    std::printf("{\"rows\": %lld, \"batch\": %lld, \"seconds\": %.3f, \"payload_bytes\": %.0f, "
                "\"mb_per_s\": %.1f, \"file_bytes\": %llu, \"peak_rss_mb\": %.1f, \"input_mb\": %.1f, "
                "\"chunks\": %llu, \"compressed_chunks\": %llu, \"raw_chunks\": %llu, "
                "\"skipped_attempts\": %llu, \"merged_chunks\": %llu}\n",
                static_cast<long long>(written), static_cast<long long>(batch_rows), seconds, payload,
                payload / seconds / 1e6, static_cast<unsigned long long>(fs::file_size(out)),
                static_cast<double>(usage.ru_maxrss) / 1024.0,
                static_cast<double>((pool.size() + cls.size()) * 2) / 1e6,
                static_cast<unsigned long long>(stats.chunks),
                static_cast<unsigned long long>(stats.compressed_chunks),
                static_cast<unsigned long long>(stats.raw_chunks),
                static_cast<unsigned long long>(stats.skipped_attempts),
                static_cast<unsigned long long>(stats.merged_chunks));
    return 0;
} catch (const fstore::Error& e) {
    std::cerr << "fstore_bench_writer: " << e.what() << "\n";
    return 1;
}
