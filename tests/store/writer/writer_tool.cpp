// Appends rows from raw files to a store through FeatureStore::append_batch (the chunk
// writer), in the batch sizes given, for test_writer_interop.py.
//
// usage: fstore_writer_tool OUT.h5 T D TOKENS.bin CLS.bin [--no-detect] [--threads N]
//                           [--reopen-after K] B1 B2 ...
// TOKENS.bin: N×T×D half bits, CLS.bin: N×D half bits (N = sum of the batch sizes).
// --reopen-after K closes and reopens the store after the K-th batch (a resume).
// Prints the writer's counters as JSON (summed over the opens).
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <algorithm>
#include <string>
#include <vector>

#include "fstore/error.hpp"
#include "fstore/feature_store.hpp"

namespace {

std::vector<std::uint16_t> read_halves(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::uint16_t> out(bytes.size() / 2);
    std::copy(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(out.size() * 2),
              reinterpret_cast<char*>(out.data()));
    return out;
}

}  // namespace

int main(int argc, char** argv) try {
    if (argc < 7) {
        std::cerr << "usage: fstore_writer_tool OUT.h5 T D TOKENS.bin CLS.bin [options] B1 ...\n";
        return 2;
    }
    const std::string out = argv[1];
    fstore::StoreLayout layout;
    layout.image_tokens = std::stoll(argv[2]);
    layout.dim = std::stoll(argv[3]);
    const auto tokens = read_halves(argv[4]);
    const auto cls = read_halves(argv[5]);
    fstore::ChunkWriterOptions options;
    int reopen_after = -1;
    std::vector<std::int64_t> batches;
    for (int i = 6; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--no-detect") options.detect_incompressible = false;
        else if (arg == "--threads") options.threads = std::stoi(argv[++i]);
        else if (arg == "--reopen-after") reopen_after = std::stoi(argv[++i]);
        else batches.push_back(std::stoll(arg));
    }
    const auto row_tokens = static_cast<std::size_t>(layout.image_tokens * layout.dim);
    const auto row_cls = static_cast<std::size_t>(layout.dim);

    fstore::ChunkWriterStats total;
    auto add = [&](const fstore::ChunkWriterStats& s) {
        total.chunks += s.chunks;
        total.compressed_chunks += s.compressed_chunks;
        total.raw_chunks += s.raw_chunks;
        total.skipped_attempts += s.skipped_attempts;
        total.merged_chunks += s.merged_chunks;
        total.bytes_in += s.bytes_in;
        total.bytes_out += s.bytes_out;
    };
    auto store = std::make_unique<fstore::FeatureStore>(fstore::FeatureStore::open_or_create(out, layout));
    store->set_writer_options(options);
    std::size_t row = 0;
    for (std::size_t b = 0; b < batches.size(); ++b) {
        const auto n = static_cast<std::size_t>(batches[b]);
        if ((row + n) * row_tokens > tokens.size() || (row + n) * row_cls > cls.size()) {
            std::cerr << "not enough rows in the input files\n";
            return 2;
        }
        std::vector<std::int64_t> labels(n);
        for (std::size_t i = 0; i < n; ++i) labels[i] = static_cast<std::int64_t>((row + i) % 8);
        std::vector<std::string> splits(n, row < 10 ? "train" : "test");
        fstore::RowBatch batch;
        batch.rows = static_cast<std::int64_t>(n);
        batch.image_features = cls.data() + row * row_cls;
        batch.image_token_features = tokens.data() + row * row_tokens;
        batch.labels = labels.data();
        batch.splits = &splits;
        store->append_batch(batch);
        row += n;
        if (static_cast<int>(b) + 1 == reopen_after) {
            add(store->writer_stats());
            store.reset();
            store = std::make_unique<fstore::FeatureStore>(
                fstore::FeatureStore::open(out, fstore::FeatureStore::Access::read_write));
            store->set_writer_options(options);
        }
    }
    add(store->writer_stats());
    std::printf("{\"rows\": %lld, \"chunks\": %llu, \"compressed_chunks\": %llu, \"raw_chunks\": %llu, "
                "\"skipped_attempts\": %llu, \"merged_chunks\": %llu, \"bytes_in\": %llu, "
                "\"bytes_out\": %llu}\n",
                static_cast<long long>(store->rows()), static_cast<unsigned long long>(total.chunks),
                static_cast<unsigned long long>(total.compressed_chunks),
                static_cast<unsigned long long>(total.raw_chunks),
                static_cast<unsigned long long>(total.skipped_attempts),
                static_cast<unsigned long long>(total.merged_chunks),
                static_cast<unsigned long long>(total.bytes_in),
                static_cast<unsigned long long>(total.bytes_out));
    return 0;
} catch (const fstore::Error& e) {
    std::cerr << "fstore_writer_tool: " << e.what() << "\n";
    return 1;
}
