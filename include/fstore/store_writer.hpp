// ChunkWriter: the fast path under FeatureStore::append_batch for the large feature columns.
//
// Why: one image yields 729×1152 half floats (1.68 MB). Writing them with H5Dwrite runs the
// LZF filter inside HDF5, one chunk at a time on one core, ~160 MB/s here; the disk takes
// ~280 MB/s. ChunkWriter compresses whole chunks on a small thread pool with liblzf
// (lzf::compress) and writes them with HDF5's direct chunk write (H5Dwrite_chunk), in order,
// from the calling thread: chunk i is written while chunks i+1.. are being compressed.
//
// Bytes on disk: exactly what HDF5's own lzf filter would store, so h5py reads the file
// unchanged. A chunk that shrinks is stored as lzf output with filter mask 0; one that does
// not is stored raw with filter mask 1 (bit 0 = the lzf filter was skipped), as HDF5 does
// for an optional filter that fails. A partial chunk is zero-padded (the fill value) to the
// full chunk size. A chunk that already holds rows (appending in the middle of a chunk:
// resume at row 6 with 4-row chunks, odd batch sizes) is read back, merged with the new rows
// and rewritten whole.
//
// Incompressible data: model features are random-like, and lzf does not shrink them
// (ratio 1.00) after spending ~4 ms per 6.7 MB chunk. Per column, once `probe_chunks`
// consecutive attempts came out at or above `incompressible_ratio` (compressed / raw), the
// writer stores chunks raw (mask 1) without trying, re-trying one chunk in `recheck_every`
// to notice when the data turns compressible. A chunk that would have shrunk by less than
// 1 - ratio may then be stored raw: still valid for every reader, at most 2% larger.
// Partial and merged chunks are always tried (their zero padding compresses).
//
// Threads: only the thread calling write_rows calls HDF5; pool threads only run liblzf on
// buffers. Memory: at most `max_inflight` chunks are compressed ahead of the writes, each
// with one output buffer (plus one input buffer for partial chunks), so memory is bounded by
// about 2 × max_inflight × chunk bytes (~13 MB per in-flight token chunk), whatever the
// batch and dataset sizes. Full chunks are compressed straight from the caller's rows.
//
// One ChunkWriter is used by one thread at a time (FeatureStore owns one per writable store).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include <hdf5.h>

namespace fstore {

struct ChunkWriterOptions {
    int threads = 0;                    // compression threads; 0: one per core (at least 1)
    std::size_t max_inflight = 0;       // chunks compressed ahead of the writes; 0: 2 × threads
    bool detect_incompressible = true;  // false: always try lzf, exactly like HDF5
    double incompressible_ratio = 0.98; // compressed/raw at or above this counts as "no gain"
    int probe_chunks = 4;               // consecutive no-gain chunks before skipping lzf
    int recheck_every = 32;             // while skipping, still try one chunk in this many
};

// Counters since the writer was made (for benchmarks and tests).
struct ChunkWriterStats {
    std::uint64_t chunks = 0;             // chunks written directly
    std::uint64_t compressed_chunks = 0;  // stored as lzf output (filter mask 0)
    std::uint64_t raw_chunks = 0;         // stored raw (filter mask 1)
    std::uint64_t skipped_attempts = 0;   // raw chunks stored without trying lzf
    std::uint64_t merged_chunks = 0;      // chunks that already held rows (read back, merged)
    std::uint64_t bytes_in = 0;           // uncompressed bytes of the chunks written
    std::uint64_t bytes_out = 0;          // bytes stored
};

// Compression decisions of one column (lives as long as the writer; see "Incompressible").
class ChunkPolicy;

class ChunkWriter {
public:
    explicit ChunkWriter(ChunkWriterOptions options = {});
    ~ChunkWriter();  // joins the pool threads
    ChunkWriter(const ChunkWriter&) = delete;
    ChunkWriter& operator=(const ChunkWriter&) = delete;

    // A policy per column: `writer.policy(i)` for column i (0 <= i < 8).
    ChunkPolicy& policy(std::size_t column);

    // Writes rows [start, start + count) of `dataset`: chunked along the first dimension only
    // (the chunk spans whole rows), its only filter lzf (filter 32000), its extent already
    // covering the rows. `data` holds count rows of `row_bytes` bytes each, in the dataset's
    // file type (C order); rows of the dataset before `start` that share a chunk with the new
    // rows are read back with `mem_type` (must equal the file type). Returns when every chunk
    // is written (not yet flushed). Throws FormatError when HDF5 refuses a read or write.
    void write_rows(hid_t dataset, hid_t mem_type, std::uint64_t start, std::uint64_t count,
                    std::size_t row_bytes, const void* data, ChunkPolicy& policy);

    ChunkWriterStats stats() const;
    const ChunkWriterOptions& options() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace fstore
