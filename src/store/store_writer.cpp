// ChunkWriter: parallel lzf compression of whole chunks, ordered direct chunk writes.
#include "fstore/store_writer.hpp"

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "fstore/error.hpp"
#include "fstore/h5.hpp"
#include "fstore/lzf_filter.hpp"

namespace fstore {

// ---- policy ----------------------------------------------------------------------------

class ChunkPolicy {
public:
    explicit ChunkPolicy(const ChunkWriterOptions& options) : options_(options) {}

    // Called by a pool thread before compressing: false = store raw without trying.
    bool should_try() {
        if (!options_.detect_incompressible) return true;
        std::lock_guard<std::mutex> lock(mutex_);
        if (!skipping_) return true;
        if (++since_try_ >= std::max(options_.recheck_every, 1)) {
            since_try_ = 0;
            return true;
        }
        return false;
    }

    // Called after an attempt: `stored` is the compressed size, 0 when lzf did not shrink it.
    void record(std::size_t raw, std::size_t stored) {
        if (!options_.detect_incompressible) return;
        const double ratio = stored == 0 ? 1.0 : static_cast<double>(stored) / static_cast<double>(raw);
        std::lock_guard<std::mutex> lock(mutex_);
        if (ratio >= options_.incompressible_ratio) {
            if (++no_gain_ >= std::max(options_.probe_chunks, 1)) skipping_ = true;
        } else {
            no_gain_ = 0;
            skipping_ = false;
            since_try_ = 0;
        }
    }

private:
    const ChunkWriterOptions& options_;
    std::mutex mutex_;
    int no_gain_ = 0;     // consecutive attempts that did not pay
    int since_try_ = 0;   // chunks skipped since the last attempt
    bool skipping_ = false;
};

namespace {

// A fixed set of threads running queued jobs. The queue needs no bound of its own: the one
// producer (write_rows) never has more than max_inflight jobs outstanding.
class ThreadPool {
public:
    explicit ThreadPool(int threads) {
        for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
    }
    ~ThreadPool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopping_ = true;
        }
        ready_.notify_all();
        for (auto& t : threads_) t.join();
    }
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    template <class F>
    auto submit(F&& f) -> std::future<decltype(f())> {
        auto task = std::make_shared<std::packaged_task<decltype(f())()>>(std::forward<F>(f));
        auto result = task->get_future();
        {
            std::lock_guard<std::mutex> lock(mutex_);
            jobs_.emplace_back([task] { (*task)(); });
        }
        ready_.notify_one();
        return result;
    }

private:
    void run() {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
                if (jobs_.empty()) return;  // stopping, nothing left
                job = std::move(jobs_.front());
                jobs_.pop_front();
            }
            job();
        }
    }

    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<std::function<void()>> jobs_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

// An uninitialised byte buffer (no zero-fill of 6.7 MB per chunk), recycled between chunks.
struct Buffer {
    std::unique_ptr<std::uint8_t[]> data;
    std::size_t capacity = 0;
};

struct Compressed {
    std::size_t size = 0;  // 0: store raw
    bool attempted = false;
};

// Whether the dataset's filter pipeline is exactly lzf: the only one whose bytes we produce.
bool lzf_only(hid_t dataset) {
    h5::PropList dcpl(H5Dget_create_plist(dataset), "cannot read a dataset's creation properties");
    if (H5Pget_layout(dcpl) != H5D_CHUNKED || H5Pget_nfilters(dcpl) != 1) return false;
    unsigned flags = 0;
    std::size_t cd_count = 0;
    unsigned config = 0;
    const H5Z_filter_t id = H5Pget_filter2(dcpl, 0, &flags, &cd_count, nullptr, 0, nullptr, &config);
    return id == lzf::filter_id;
}

}  // namespace

// ---- writer ----------------------------------------------------------------------------

struct ChunkWriter::Impl {
    ChunkWriterOptions options;
    std::size_t inflight = 1;
    std::vector<std::unique_ptr<ChunkPolicy>> policies;
    std::vector<Buffer> spare;  // recycled buffers (caller thread only)
    ChunkWriterStats stats;
    std::unique_ptr<ThreadPool> pool;  // last: joined first, while the rest is alive

    Buffer take(std::size_t size) {
        while (!spare.empty()) {
            Buffer b = std::move(spare.back());
            spare.pop_back();
            if (b.capacity >= size) return b;
        }
        Buffer b;
        b.data.reset(new std::uint8_t[size]);
        b.capacity = size;
        return b;
    }
    void give(Buffer&& b) {
        if (b.data && spare.size() < 2 * inflight + 2) spare.push_back(std::move(b));
    }
};

ChunkWriter::ChunkWriter(ChunkWriterOptions options) : impl_(std::make_unique<Impl>()) {
    Impl& s = *impl_;
    if (options.threads <= 0)
        options.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    if (options.max_inflight == 0) options.max_inflight = 2 * static_cast<std::size_t>(options.threads);
    s.options = options;
    s.inflight = options.max_inflight;
    for (int i = 0; i < 8; ++i) s.policies.push_back(std::make_unique<ChunkPolicy>(s.options));
    s.pool = std::make_unique<ThreadPool>(options.threads);
}

ChunkWriter::~ChunkWriter() = default;

ChunkPolicy& ChunkWriter::policy(std::size_t column) {
    if (column >= impl_->policies.size())
        throw InternalError("ChunkWriter::policy: column " + std::to_string(column) +
                            " out of range (0..7)");
    return *impl_->policies[column];
}

ChunkWriterStats ChunkWriter::stats() const { return impl_->stats; }
const ChunkWriterOptions& ChunkWriter::options() const { return impl_->options; }

void ChunkWriter::write_rows(hid_t dataset, hid_t mem_type, std::uint64_t start, std::uint64_t count,
                             std::size_t row_bytes, const void* data, ChunkPolicy& policy) {
    if (count == 0) return;
    Impl& s = *impl_;
    const auto dims = h5::dims(dataset);
    const auto chunk = h5::chunk_dims(dataset);
    if (dims.empty() || dims[0] < start + count)
        throw InternalError("ChunkWriter::write_rows: rows " + std::to_string(start) + ".." +
                            std::to_string(start + count) + " lie beyond the dataset's extent");
    bool whole_rows = chunk.size() == dims.size() && chunk[0] > 0;
    std::size_t row_elements = 1;
    for (std::size_t k = 1; whole_rows && k < dims.size(); ++k) {
        whole_rows = chunk[k] == dims[k];
        row_elements *= static_cast<std::size_t>(dims[k]);
    }
    const auto* bytes = static_cast<const std::uint8_t*>(data);

    auto row_shape = [&](hsize_t rows) {
        std::vector<hsize_t> shape(dims);
        shape[0] = rows;
        return h5::simple_space(shape);
    };
    // Any other layout, filter pipeline or file type (raw chunks carry `mem_type`'s bytes;
    // a float32 dataset needs HDF5's conversion): let HDF5 do it (correct for everything).
    const h5::Datatype file_type(H5Dget_type(dataset), "cannot read a dataset's type");
    if (!whole_rows || !lzf_only(dataset) || H5Tget_size(mem_type) * row_elements != row_bytes ||
        H5Tequal(file_type, mem_type) <= 0) {
        h5::Dataspace file_space = h5::select_rows(dataset, start, count);
        h5::Dataspace mem_space = row_shape(count);
        h5::check_status(H5Dwrite(dataset, mem_type, mem_space, file_space, H5P_DEFAULT, data),
                         "cannot write rows");
        return;
    }

    const hsize_t chunk_rows = chunk[0];
    const std::size_t chunk_bytes = static_cast<std::size_t>(chunk_rows) * row_bytes;
    const hsize_t end = start + count;

    struct Pending {
        std::future<Compressed> result;
        Buffer out;
        Buffer merged;             // the assembled chunk, for partial chunks
        const std::uint8_t* in;    // the chunk's uncompressed bytes
        hsize_t first_row;
    };
    std::deque<Pending> pending;
    // Jobs hold pointers into `pending`'s buffers and the caller's rows: never leave this
    // function (error included) before every job has finished.
    struct Drain {
        std::deque<Pending>& pending;
        ~Drain() {
            for (auto& p : pending)
                if (p.result.valid()) p.result.wait();
        }
    } drain{pending};

    std::vector<hsize_t> offset(dims.size(), 0);
    auto write_front = [&] {
        Pending& p = pending.front();
        const Compressed c = p.result.get();
        offset[0] = p.first_row;
        const bool raw = c.size == 0;
        const std::uint32_t mask = raw ? 1u : 0u;  // bit 0: the (only) filter was skipped
        const std::size_t size = raw ? chunk_bytes : c.size;
        const void* buffer = raw ? static_cast<const void*>(p.in) : p.out.data.get();
        h5::check_status(H5Dwrite_chunk(dataset, H5P_DEFAULT, mask, offset.data(), size, buffer),
                         "cannot write a chunk");
        ++s.stats.chunks;
        ++(raw ? s.stats.raw_chunks : s.stats.compressed_chunks);
        if (raw && !c.attempted) ++s.stats.skipped_attempts;
        s.stats.bytes_in += chunk_bytes;
        s.stats.bytes_out += size;
        s.give(std::move(p.out));
        s.give(std::move(p.merged));
        pending.pop_front();
    };

    for (hsize_t c = start / chunk_rows; c * chunk_rows < end; ++c) {
        const hsize_t c0 = c * chunk_rows;
        const hsize_t lo = std::max(c0, static_cast<hsize_t>(start));
        const hsize_t hi = std::min(c0 + chunk_rows, end);
        while (pending.size() >= s.inflight) write_front();

        Pending p;
        p.first_row = c0;
        if (lo == c0 && hi == c0 + chunk_rows) {
            p.in = bytes + (c0 - start) * row_bytes;  // a whole chunk of the caller's rows
        } else {
            p.merged = s.take(chunk_bytes);
            std::uint8_t* merged = p.merged.data.get();
            if (lo > c0) {
                // Rows already in this chunk: read them back (HDF5 decompresses) and rewrite
                // the chunk whole with the new rows after them.
                h5::Dataspace file_space = h5::select_rows(dataset, c0, lo - c0);
                h5::Dataspace mem_space = row_shape(lo - c0);
                h5::check_status(H5Dread(dataset, mem_type, mem_space, file_space, H5P_DEFAULT, merged),
                                 "cannot read back the rows of a partial chunk");
                ++s.stats.merged_chunks;
            }
            std::memcpy(merged + (lo - c0) * row_bytes, bytes + (lo - start) * row_bytes,
                        (hi - lo) * row_bytes);
            // Past the last row: the fill value (zeros), as HDF5 pads a partial last chunk.
            std::memset(merged + (hi - c0) * row_bytes, 0, (c0 + chunk_rows - hi) * row_bytes);
            p.in = merged;
        }
        p.out = s.take(chunk_bytes);
        const std::uint8_t* in = p.in;
        std::uint8_t* out = p.out.data.get();
        // Assembled (partial or merged) chunks are always tried and teach the policy
        // nothing: their zero padding compresses whatever the data, and HDF5 would store
        // them compressed. At most two per call, so the attempts cost little.
        ChunkPolicy* pol = p.merged.data ? nullptr : &policy;
        p.result = s.pool->submit([in, out, chunk_bytes, pol] {
            Compressed result;
            if (pol != nullptr && !pol->should_try()) return result;
            result.attempted = true;
            // Capacity one byte below the input size: a chunk must shrink to be stored
            // compressed. h5py's filter would also keep an output of exactly the input
            // size, but HDF5 1.10 rewrites a same-size chunk in place WITHOUT updating its
            // filter mask, so a raw chunk later replaced by an equally long compressed one
            // (or the reverse) would be read back wrongly. Raw with mask 1 is always valid.
            result.size = lzf::compress(in, chunk_bytes, out, chunk_bytes - 1);
            if (pol != nullptr) pol->record(chunk_bytes, result.size);
            return result;
        });
        pending.push_back(std::move(p));
    }
    while (!pending.empty()) write_front();
}

}  // namespace fstore
