// FeatureStore: the schema of docs/reference-store.md on top of h5.hpp.
#include "fstore/feature_store.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <numeric>
#include <utility>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "fstore/digest.hpp"
#include "fstore/error.hpp"
#include "fstore/files.hpp"
#include "fstore/h5.hpp"
#include "fstore/lzf_filter.hpp"
#include "fstore/store_writer.hpp"
#ifdef FSTORE_HAVE_JOURNAL
#include "fstore/journal.hpp"
#endif

namespace fstore {
namespace fs = std::filesystem;

namespace {

constexpr std::size_t column_count = 5;
constexpr std::array<const char*, column_count> column_names = {
    "image_features", "image_token_features", "ids", "labels", "split"};
constexpr const char* templates_group = "templates";

// The reference's chunk shapes, first dimension: (64, D), (4, T_img, D), (4096,).
constexpr std::array<hsize_t, column_count> chunk_rows = {64, 4, 4096, 4096, 4096};

// Rows read per step when looking for the last complete row from the end of the file.
constexpr hsize_t tail_block = 4096;

std::size_t index_of(Column column) { return static_cast<std::size_t>(column); }
const char* name_of(Column column) { return column_names[index_of(column)]; }

std::string now_local() {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &tm);
    return text;
}

// json.dumps() formatting (", " and ": " separators, ASCII escapes, insertion order), so
// JSON attributes read back byte-identical to what the Python reference writes. Bytes that
// are not UTF-8 (split names of a hand-made store) become U+FFFD rather than an exception.
void python_dumps(const nlohmann::ordered_json& value, std::string& out) {
    if (value.is_object()) {
        out += '{';
        bool first = true;
        for (const auto& [key, item] : value.items()) {
            if (!first) out += ", ";
            first = false;
            out += nlohmann::ordered_json(key).dump(-1, ' ', true, nlohmann::ordered_json::error_handler_t::replace);
            out += ": ";
            python_dumps(item, out);
        }
        out += '}';
    } else if (value.is_array()) {
        out += '[';
        bool first = true;
        for (const auto& item : value) {
            if (!first) out += ", ";
            first = false;
            python_dumps(item, out);
        }
        out += ']';
    } else {
        out += value.dump(-1, ' ', true, nlohmann::ordered_json::error_handler_t::replace);
    }
}

std::string python_dumps(const nlohmann::ordered_json& value) {
    std::string out;
    python_dumps(value, out);
    return out;
}

// h5py's guess_chunk (h5py/_hl/filters.py), used for the template datasets, which the
// reference creates with `compression="lzf"` and no explicit chunks.
std::vector<hsize_t> guess_chunk(const std::vector<hsize_t>& shape, std::size_t type_size) {
    constexpr double chunk_base = 16 * 1024, chunk_min = 8 * 1024, chunk_max = 1024 * 1024;
    std::vector<double> chunks;
    for (hsize_t x : shape) chunks.push_back(x != 0 ? static_cast<double>(x) : 1024.0);
    auto product = [&] {
        double p = 1;
        for (double c : chunks) p *= c;
        return p;
    };
    const double dset_size = product() * static_cast<double>(type_size);
    double target = chunk_base * std::pow(2.0, std::log10(dset_size / (1024.0 * 1024.0)));
    target = std::clamp(target, chunk_min, chunk_max);
    for (std::size_t idx = 0;; ++idx) {
        const double bytes = product() * static_cast<double>(type_size);
        if ((bytes < target || std::fabs(bytes - target) / target < 0.5) && bytes < chunk_max)
            break;
        if (product() == 1) break;
        double& c = chunks[idx % chunks.size()];
        c = std::ceil(c / 2.0);
    }
    return {chunks.begin(), chunks.end()};
}

struct DatasetSpec {
    std::vector<hsize_t> shape;
    std::vector<hsize_t> chunks;
    bool growable = false;  // unlimited first dimension
};

// Creates a chunked, lzf-compressed dataset the way h5py's create_dataset does: fill time
// "alloc", no object time stamps.
h5::Dataset create_dataset(hid_t loc, const std::string& name, hid_t type, const DatasetSpec& spec) {
    const std::string what = "cannot create dataset '" + name + "'";
    h5::PropList dcpl(H5Pcreate(H5P_DATASET_CREATE), what.c_str());
    h5::check_status(H5Pset_chunk(dcpl, static_cast<int>(spec.chunks.size()), spec.chunks.data()),
                     what.c_str());
    h5::check_status(H5Pset_fill_time(dcpl, H5D_FILL_TIME_ALLOC), what.c_str());
    h5::check_status(H5Pset_obj_track_times(dcpl, false), what.c_str());
    lzf::add_to(dcpl);
    std::vector<hsize_t> max_shape = spec.shape;
    if (spec.growable) max_shape[0] = H5S_UNLIMITED;
    h5::Dataspace space(H5Screate_simple(static_cast<int>(spec.shape.size()), spec.shape.data(),
                                         max_shape.data()),
                        what.c_str());
    return h5::Dataset(H5Dcreate2(loc, name.c_str(), type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT),
                       what.c_str());
}

h5::Datatype column_type(Column column) {
    switch (column) {
    case Column::image_features:
    case Column::image_token_features:
        return h5::half_type();
    case Column::ids:
    case Column::labels:
        return h5::Datatype(H5Tcopy(H5T_STD_I64LE), "cannot create the int64 type");
    case Column::split:
        break;
    }
    return h5::utf8_string_type();
}

std::vector<hsize_t> row_shape(Column column, const StoreLayout& layout) {
    const auto d = static_cast<hsize_t>(layout.dim);
    const auto t = static_cast<hsize_t>(layout.image_tokens);
    switch (column) {
    case Column::image_features: return {d};
    case Column::image_token_features: return {t, d};
    default: return {};
    }
}

std::size_t row_elements(Column column, const StoreLayout& layout) {
    std::size_t n = 1;
    for (hsize_t x : row_shape(column, layout)) n *= static_cast<std::size_t>(x);
    return n;
}

// Opens a column with a chunk cache that holds two rows' worth of its chunks (every chunk a
// row crosses, twice), so reading rows scattered inside one chunk decompresses it once, not
// once per row: a (4, 729, 1152) token chunk is 6.7 MB, far over HDF5's 1 MB default, and a
// hand-made store chunked across the row (h5py's chunks=True) has dozens of chunks per row.
h5::Dataset open_column(hid_t file, const char* name) {
    std::size_t chunk_bytes = 0;
    std::size_t chunks_per_row = 1;
    {
        h5::Dataset probe = h5::open_dataset(file, name);
        const auto chunks = h5::chunk_dims(probe);
        if (chunks.empty()) return probe;
        const auto shape = h5::dims(probe);
        h5::Datatype type(H5Dget_type(probe), "cannot read a dataset's type");
        chunk_bytes = H5Tget_size(type);
        for (std::size_t i = 0; i < chunks.size(); ++i) {
            chunk_bytes *= static_cast<std::size_t>(chunks[i]);
            if (i > 0 && i < shape.size() && chunks[i] > 0) {
                chunks_per_row *= static_cast<std::size_t>((shape[i] + chunks[i] - 1) / chunks[i]);
            }
        }
    }
    constexpr std::size_t cache_cap = std::size_t{512} << 20;  // a pathological chunking gets no more
    const std::size_t cache_bytes =
        std::clamp<std::size_t>(2 * chunk_bytes * chunks_per_row + 4096, std::size_t{1} << 20, cache_cap);
    // HDF5 wants the hash table well over the chunks the cache holds (an odd count spreads
    // them).
    const std::size_t cached_chunks = std::min(chunks_per_row * 2, cache_bytes / std::max<std::size_t>(chunk_bytes, 1));
    const std::size_t slots = std::clamp<std::size_t>(10 * cached_chunks + 1, 521, std::size_t{1} << 20) | 1;
    h5::PropList dapl(H5Pcreate(H5P_DATASET_ACCESS), "cannot create a dataset access list");
    h5::check_status(H5Pset_chunk_cache(dapl, slots, cache_bytes, H5D_CHUNK_CACHE_W0_DEFAULT),
                     "cannot set the chunk cache");
    return h5::open_dataset(file, name, dapl);
}

void set_rows(hid_t dataset, hsize_t rows) {
    auto shape = h5::dims(dataset);
    shape[0] = rows;
    h5::check_status(H5Dset_extent(dataset, shape.data()), "cannot resize a dataset");
}

void write_rows(hid_t dataset, hid_t mem_type, hsize_t start, hsize_t count,
                const std::vector<hsize_t>& per_row, const void* data) {
    if (count == 0) return;
    std::vector<hsize_t> mem_shape{count};
    mem_shape.insert(mem_shape.end(), per_row.begin(), per_row.end());
    h5::Dataspace file_space = h5::select_rows(dataset, start, count);
    h5::Dataspace mem_space = h5::simple_space(mem_shape);
    h5::check_status(H5Dwrite(dataset, mem_type, mem_space, file_space, H5P_DEFAULT, data),
                     "cannot write rows");
}

void read_rows_into(hid_t dataset, hid_t mem_type, hsize_t start, hsize_t count,
                    const std::vector<hsize_t>& per_row, void* data) {
    if (count == 0) return;
    std::vector<hsize_t> mem_shape{count};
    mem_shape.insert(mem_shape.end(), per_row.begin(), per_row.end());
    h5::Dataspace file_space = h5::select_rows(dataset, start, count);
    h5::Dataspace mem_space = h5::simple_space(mem_shape);
    if (H5Dread(dataset, mem_type, mem_space, file_space, H5P_DEFAULT, data) < 0)
        h5::fail_row_read(dataset, start, count);
}

std::vector<std::int64_t> read_int64(hid_t dataset, hsize_t start, hsize_t count) {
    std::vector<std::int64_t> out(count);
    read_rows_into(dataset, H5T_NATIVE_INT64, start, count, {}, out.data());
    return out;
}

// Contiguous runs [start, start + count) covering sorted unique indices.
struct Run {
    std::int64_t start;
    std::int64_t count;
};
std::vector<Run> runs_of(const std::vector<std::int64_t>& sorted_unique) {
    std::vector<Run> runs;
    for (std::int64_t i : sorted_unique) {
        if (!runs.empty() && runs.back().start + runs.back().count == i)
            ++runs.back().count;
        else
            runs.push_back({i, 1});
    }
    return runs;
}

}  // namespace

// ---- small types ------------------------------------------------------------------------

std::size_t dtype_size(DType dtype) {
    switch (dtype) {
    case DType::f16: return 2;
    case DType::f32: return 4;
    case DType::i64: return 8;
    }
    return 0;
}

const char* dtype_name(DType dtype) {
    switch (dtype) {
    case DType::f16: return "float16";
    case DType::f32: return "float32";
    case DType::i64: return "int64";
    }
    return "?";
}

std::int64_t Array::elements() const {
    std::int64_t n = 1;
    for (std::int64_t x : shape) n *= x;
    return n;
}

std::string texts_hash(const std::vector<std::string>& texts) {
    Digest sha = Digest::sha256();
    for (const auto& text : texts) {
        sha.update(text);
        sha.update("", 1);  // each text ends in one 0 byte
    }
    return sha.hex();
}

// A reader's shared flock(2) on the store file, held while the store is open. HDF5 takes
// the same lock itself, except with HDF5_USE_FILE_LOCKING=FALSE (common on clusters): then
// a reader would read a store that a writer is halfway through appending to. The writer's
// exclusive lock (the journal driver's) and this one exclude each other either way.
class ReaderLock {
public:
    ReaderLock() = default;
    ReaderLock(ReaderLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    ReaderLock& operator=(ReaderLock&& other) noexcept {
        std::swap(fd_, other.fd_);
        return *this;
    }
    ReaderLock(const ReaderLock&) = delete;
    ReaderLock& operator=(const ReaderLock&) = delete;
    ~ReaderLock() {
        if (fd_ >= 0) ::close(fd_);
    }

    // Nothing to lock (no such file, a FIFO, a file system without flock): the open that
    // follows reports or works as before.
    static ReaderLock take(const fs::path& path) {
        ReaderLock lock;
        lock.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (lock.fd_ < 0) return lock;
        if (::flock(lock.fd_, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK)
            throw LockedError("store " + quoted(path) + " is being written by another process; wait for it to finish");
        return lock;
    }

private:
    int fd_ = -1;
};

// ---- Impl -------------------------------------------------------------------------------

class FeatureStore::Impl {
public:
    fs::path path;
    bool writable = false;
    ReaderLock reader_lock;  // read-only opens
    // Access::templates_only: the rows are read as a reader sees them and never changed.
    bool rows_frozen = false;
    StoreLayout layout;
    std::int64_t rows = 0;
    h5::File file;
    // Missing columns stay invalid only in read-only stores; writable opens repair them.
    std::array<h5::Dataset, column_count> columns;
    // Rows per split in order of first appearance (json.dumps keeps dict order); writable only.
    std::vector<std::pair<std::string, std::int64_t>> counts;
    // The parallel chunk writer of append_batch; made on first use (read-only opens and
    // stores that never append start no threads).
    ChunkWriterOptions writer_options;
    std::unique_ptr<ChunkWriter> writer;

    ChunkWriter& chunk_writer() {
        if (!writer) writer = std::make_unique<ChunkWriter>(writer_options);
        return *writer;
    }

    hid_t column(Column c) const { return columns[index_of(c)].get(); }
    bool has(Column c) const { return columns[index_of(c)].valid(); }

    // Set when a change failed halfway: the file goes back to its last commit at close, so
    // this object's view of it (rows, counts) can no longer be trusted.
    bool broken = false;

    void require_writable(const char* action) const {
        if (!writable)
            throw UsageError("cannot " + std::string(action) + ": store " + quoted(path) +
                             " is open read-only; open it with Access::read_write");
        if (broken)
            throw InternalError("cannot " + std::string(action) + ": an earlier change of store " +
                                quoted(path) + " failed and is rolled back to the last commit "
                                "when closed; reopen the store");
    }

    void require_rows_writable(const char* action) const {
        require_writable(action);
        if (rows_frozen)
            throw UsageError("cannot " + std::string(action) + ": store " + quoted(path) +
                             " is open for templates only; open it with Access::read_write");
    }

    // Runs the writing part of a change: if it throws, nothing of it may become permanent
    // through a later flush or the close, so the transaction is abandoned (the journal
    // rolls the file back to its last commit) and this object refuses further changes.
    template <class Body> void change(Body&& body) {
        try {
            body();
        } catch (...) {
            abandon();
            throw;
        }
    }

    void abandon() noexcept {
        broken = true;
#ifdef FSTORE_HAVE_JOURNAL
        try {
            journal::discard(file);
        } catch (...) {  // not a journaled file (cannot happen for writers): nothing to discard
        }
#endif
    }

    void check_index(std::int64_t row) const {
        if (row >= 0 && row < rows) return;
        if (rows == 0)
            throw UsageError("row index " + std::to_string(row) + " is out of range: store " +
                             quoted(path) + " has no rows");
        throw UsageError("row index " + std::to_string(row) + " is out of range: store " +
                         quoted(path) + " has " + std::to_string(rows) + " rows (valid 0.." +
                         std::to_string(rows - 1) + ")");
    }

    std::vector<std::string> splits(hsize_t start, hsize_t count) const {
        if (!has(Column::split)) return std::vector<std::string>(count, missing_split);
        return h5::read_strings(column(Column::split), start, count);
    }

    void commit() {
        if (!writable) return;
        h5::check_status(H5Fflush(file, H5F_SCOPE_GLOBAL), "cannot flush the store to disk");
#ifdef FSTORE_HAVE_JOURNAL
        journal::commit(file);
#endif
    }

    void write_split_counts() {
        nlohmann::ordered_json json = nlohmann::ordered_json::object();
        for (const auto& [name, n] : counts) json[name] = n;
        h5::write_attribute(file, "split_counts", python_dumps(json));
    }

    void add_counts(const std::vector<std::string>& names, std::int64_t sign) {
        for (const auto& name : names) {
            auto it = std::find_if(counts.begin(), counts.end(),
                                   [&](const auto& entry) { return entry.first == name; });
            if (it == counts.end()) it = counts.insert(counts.end(), {name, 0});
            it->second += sign;
        }
        counts.erase(std::remove_if(counts.begin(), counts.end(),
                                    [](const auto& entry) { return entry.second <= 0; }),
                     counts.end());
    }

    std::int64_t complete_rows() const;
    void load_layout();
    void repair();
    void create_column(Column c, hsize_t n);
    void set_all_rows(std::int64_t n);
    h5::Group templates(bool create);
};

void FeatureStore::Impl::load_layout() {
    auto int_attr = [&](const char* name) -> std::optional<std::int64_t> {
        auto v = h5::read_attribute(file, name);
        if (v && std::holds_alternative<std::int64_t>(*v)) return std::get<std::int64_t>(*v);
        return std::nullopt;
    };
    const auto features = h5::dims(column(Column::image_features));
    if (features.size() != 2)
        throw FormatError("store " + quoted(path) + " is damaged: /image_features has rank " +
                          std::to_string(features.size()) + ", expected 2 (N, D)");
    layout.dim = int_attr("D").value_or(static_cast<std::int64_t>(features[1]));
    if (static_cast<std::int64_t>(features[1]) != layout.dim)
        throw FormatError("store " + quoted(path) + " is damaged: attribute D=" +
                          std::to_string(layout.dim) + " but /image_features is " +
                          std::to_string(features[1]) + " wide");
    std::optional<std::int64_t> tokens = int_attr("T_img");
    if (has(Column::image_token_features)) {
        const auto t = h5::dims(column(Column::image_token_features));
        if (t.size() != 3 || static_cast<std::int64_t>(t[2]) != layout.dim ||
            (tokens && static_cast<std::int64_t>(t[1]) != *tokens))
            throw FormatError("store " + quoted(path) +
                              " is damaged: /image_token_features does not have shape "
                              "(N, T_img, D) matching the attributes T_img and D");
        tokens = static_cast<std::int64_t>(t[1]);
    }
    layout.image_tokens = tokens.value_or(-1);
}

void FeatureStore::Impl::create_column(Column c, hsize_t n) {
    DatasetSpec spec;
    spec.shape = {n};
    spec.chunks = {chunk_rows[index_of(c)]};
    for (hsize_t x : row_shape(c, layout)) {
        spec.shape.push_back(x);
        spec.chunks.push_back(x);
    }
    spec.growable = true;
    h5::Datatype type = column_type(c);
    create_dataset(file, name_of(c), type, spec);
    columns[index_of(c)] = open_column(file, name_of(c));
}

// A row is complete when it lies within all five datasets, its id equals its row number and
// its split is non-empty: a writer killed between resizing and writing (without the journal,
// e.g. the Python reference) leaves fill values (id 0, empty split) in its last rows.
std::int64_t FeatureStore::Impl::complete_rows() const {
    std::int64_t n = -1;
    for (std::size_t i = 0; i < column_count; ++i) {
        if (!columns[i].valid()) continue;
        const auto extent = static_cast<std::int64_t>(h5::dims(columns[i])[0]);
        n = n < 0 ? extent : std::min(n, extent);
    }
    std::int64_t end = std::max<std::int64_t>(n, 0);
    while (end > 0) {
        const std::int64_t start = std::max<std::int64_t>(0, end - static_cast<std::int64_t>(tail_block));
        const auto count = static_cast<hsize_t>(end - start);
        std::vector<std::int64_t> ids;
        if (has(Column::ids)) ids = read_int64(column(Column::ids), start, count);
        const auto names = splits(start, count);
        for (std::int64_t i = end - 1; i >= start; --i) {
            const auto k = static_cast<std::size_t>(i - start);
            if ((ids.empty() || ids[k] == i) && !names[k].empty()) return i + 1;
        }
        end = start;
    }
    return 0;
}

void FeatureStore::Impl::set_all_rows(std::int64_t n) {
    for (auto& dataset : columns) set_rows(dataset, static_cast<hsize_t>(n));
    rows = n;
}

h5::Group FeatureStore::Impl::templates(bool create) {
    if (h5::exists(file, templates_group)) {
        if (h5::object_type(file, templates_group) != H5O_TYPE_GROUP) {
            throw FormatError("store " + quoted(path) + " is damaged: /templates is not a group (a dataset or a "
                              "broken link): run fstore-access clear-templates to recreate it (the image rows stay)");
        }
        return h5::open_group(file, templates_group);
    }
    if (!create) return {};
    return h5::create_group(file, templates_group);
}

// What the reference does on open, plus trimming torn rows. Only for writable opens.
void FeatureStore::Impl::repair() {
    if (layout.image_tokens <= 0)
        throw FormatError("store " + quoted(path) +
                          " cannot be repaired: it has neither /image_token_features nor a T_img "
                          "attribute; move it aside and build a new store (another --h5 path)");
    const auto n = static_cast<hsize_t>(h5::dims(column(Column::image_features))[0]);
    if (!has(Column::image_token_features)) {
        // Recreating it empty would make the completeness trim below delete every row: a
        // repair must never discard stored features, so only an empty store is repaired.
        if (n > 0)
            throw FormatError("store " + quoted(path) + " has " + std::to_string(n) +
                              " image rows but no /image_token_features: their token features "
                              "are lost; restore the dataset, or move the file aside and build a "
                              "new store (another --h5 path)");
        spdlog::warn("store {}: /image_token_features is missing; recreating it empty", quoted(path));
        create_column(Column::image_token_features, 0);
    }
    if (has(Column::split)) {
        // Readers take fixed-length strings ('S8' from h5py); appends write vlen UTF-8,
        // which HDF5 does not convert to them.
        h5::Datatype type(H5Dget_type(column(Column::split)), "cannot read the type of /split");
        if (H5Tget_class(type) != H5T_STRING || H5Tis_variable_str(type) <= 0)
            throw FormatError("store " + quoted(path) + ": /split does not hold variable-length strings "
                              "(h5py's str), which fstore appends: rewrite it with h5py as "
                              "h5py.string_dtype(), or build a new store (another --h5 path)");
    }
    if (!has(Column::ids)) {
        spdlog::warn("store {}: /ids is missing; recreating it as row numbers", quoted(path));
        create_column(Column::ids, n);
        std::vector<std::int64_t> ids(n);
        std::iota(ids.begin(), ids.end(), std::int64_t{0});
        write_rows(column(Column::ids), H5T_NATIVE_INT64, 0, n, {}, ids.data());
    }
    if (!has(Column::labels)) {
        spdlog::warn("store {}: /labels is missing; recreating it with -1 (unknown)", quoted(path));
        create_column(Column::labels, n);
        std::vector<std::int64_t> labels(n, missing_label);
        write_rows(column(Column::labels), H5T_NATIVE_INT64, 0, n, {}, labels.data());
    }
    if (!has(Column::split)) {
        spdlog::warn("store {}: /split is missing; recreating it as \"{}\"", quoted(path), missing_split);
        create_column(Column::split, n);
        h5::write_strings(column(Column::split), 0, std::vector<std::string>(n, missing_split));
    }
    templates(true);
    if (!h5::has_attribute(file, "D")) h5::write_attribute(file, "D", layout.dim);
    if (!h5::has_attribute(file, "T_img")) h5::write_attribute(file, "T_img", layout.image_tokens);

    const std::int64_t complete = complete_rows();
    bool trimmed = false;
    for (const auto& dataset : columns)
        trimmed = trimmed || static_cast<std::int64_t>(h5::dims(dataset)[0]) != complete;
    if (trimmed) {
        spdlog::warn("store {}: keeping the {} rows complete in all five datasets; trimming the rest",
                     quoted(path), complete);
    }
    if (trimmed) set_all_rows(complete);
    rows = complete;

    counts.clear();
    add_counts(splits(0, static_cast<hsize_t>(rows)), +1);
    nlohmann::ordered_json json = nlohmann::ordered_json::object();
    for (const auto& [name, count] : counts) json[name] = count;
    const auto stored = h5::read_attribute(file, "split_counts");
    if (!stored || !std::holds_alternative<std::string>(*stored) ||
        std::get<std::string>(*stored) != python_dumps(json))
        write_split_counts();
    commit();
}

// ---- open / create ----------------------------------------------------------------------

namespace {

FeatureStore::Impl& use(const std::unique_ptr<FeatureStore::Impl>& impl) {
    if (!impl) throw UsageError("this FeatureStore was moved from: use the object it was moved to");
    h5::init();
    return *impl;
}

// Why this process may not use `path` in `mode` (access(2) flags): the system's reason in
// lower case, to sit inside a sentence ("permission denied", "read-only file system");
// empty when it may.
std::string refusal(const fs::path& path, int mode) {
    if (::access(path.c_str(), mode) == 0) return "";
    std::string reason = std::strerror(errno);
    if (!reason.empty()) reason[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(reason[0])));
    return reason;
}

// A writer needs the store, and the directory where its rollback journal goes, writable.
// Checked before HDF5 tries: it would report either as a file it cannot open.
void check_writable(const fs::path& path) {
    const std::string fix = ": check its permissions, or write to another --h5 path";
    if (const auto why = refusal(path, W_OK); !why.empty())
        throw IoError("store " + quoted(path) + " is not writable (" + why + ")" + fix);
    // Writes go into the file in place, so they would change every hard link (a `cp -al`
    // snapshot too), and a killed writer's journal sits beside one name only.
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && st.st_nlink > 1)
        throw IoError("store " + quoted(path) + " has " + std::to_string(st.st_nlink) +
                      " hard links: writing it would change every one of them; write a copy (cp, "
                      "not ln), or remove the other links");
#ifdef FSTORE_HAVE_JOURNAL
    const fs::path directory = directory_of(journal::journal_path(path));
    if (const auto why = refusal(directory, W_OK | X_OK); !why.empty())
        throw IoError("store " + quoted(path) + " is not writable: its directory " + quoted(directory) +
                      ", where its rollback journal goes, is not (" + why + ")" + fix);
#endif
}

// A zero-byte regular file, or a symlink to one, with no journal beside it (e.g. made by
// mktemp): nothing to lose.
bool is_empty_file(const fs::path& path) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec) || fs::file_size(path, ec) != 0 || ec) return false;
#ifdef FSTORE_HAVE_JOURNAL
    if (fs::exists(journal::journal_path(path), ec)) return false;  // the rollback restores it
#endif
    return true;
}

void check_path(const fs::path& path) {
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (!fs::exists(status))
        throw NotFoundError("store " + quoted(path) +
                            " does not exist: check the path, or run fstore build to create it");
    if (fs::is_directory(status))
        throw NotFoundError(quoted(path) +
                            " is a directory, not a store file: pass the path of the .h5 store");
    // HDF5 would block opening a FIFO until someone writes to it, and a device holds no store.
    if (!fs::is_regular_file(status)) {
        const char* kind = fs::is_fifo(status) ? "FIFO" : fs::is_socket(status) ? "socket" : "device";
        throw FormatError(quoted(path) + " is a " + kind + ", not a store file: pass the path of the .h5 store");
    }
    // HDF5 would turn an empty file opened for writing into an empty HDF5 file (no store).
    if (is_empty_file(path))
        throw FormatError(quoted(path) + " is an empty file, not a store: pass the path of a store "
                          "written by fstore build (fstore build creates one in place of an empty file)");
}

h5::File open_file(const fs::path& path, bool writable, bool durable) {
    check_path(path);
    if (writable) check_writable(path);
    h5::PropList fapl;
#ifdef FSTORE_HAVE_JOURNAL
    if (writable) {
        journal::recover(path);  // roll back a commit a killed writer left unfinished
        fapl = h5::PropList(journal::file_access_plist(durable));
    }
#endif
    const hid_t id = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY,
                             fapl.valid() ? fapl.get() : H5P_DEFAULT);
    if (id >= 0) return h5::File(id);

    const h5::Failure failure = h5::last_failure();
    // Format first: a file that is not HDF5 is never a locked store, whatever HDF5's error
    // stack says about the failed open.
    if (H5Fis_hdf5(path.c_str()) <= 0) {
        if (::access(path.c_str(), R_OK) != 0)
            throw NotFoundError("store " + quoted(path) +
                                " is not readable: check its permissions");
        throw FormatError(quoted(path) +
                          " is not an HDF5 file: pass the path of a store written by fstore build");
    }
    if (failure.truncated)
        throw FormatError(quoted(path) + " is truncated or corrupt (HDF5 end-of-file mismatch): "
                          "restore it from a copy or rebuild it");
    if (failure.marked_open)
        throw LockedError("store " + quoted(path) +
                          " is marked open for writing by an HDF5 program (an SWMR writer, or one that "
                          "crashed): wait for it to finish; if none is running, clear the mark with "
                          "h5clear -s " + quoted(path));
    if (failure.lock && !writable)
        throw LockedError("store " + quoted(path) +
                          " is being written by another process; wait for it to finish");
    if (failure.lock)
        throw LockedError("store " + quoted(path) +
                          " is open in another process (a writer, or readers); wait for it to "
                          "finish before writing");
    // The file system refused a read or write (HDF5 rewrites the superblock when it opens a
    // file for writing: a full disk fails there).
    if (failure.io)
        throw IoError("cannot open store " + quoted(path) + ": " + failure.reason +
                      ": free space or fix the disk, then rerun");
    throw FormatError("cannot open store " + quoted(path) + ": " +
                      (failure.reason.empty() ? "HDF5 refused it" : failure.reason) +
                      "; check that the file is complete");
}

}  // namespace

FeatureStore::FeatureStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FeatureStore::FeatureStore(FeatureStore&&) noexcept = default;
FeatureStore& FeatureStore::operator=(FeatureStore&& other) noexcept {
    if (this != &other) {
        if (impl_ && impl_->writable) {
            try {
                impl_->commit();
            } catch (const std::exception& e) {
                spdlog::error("store {}: final commit failed: {}", quoted(impl_->path), e.what());
            }
        }
        impl_ = std::move(other.impl_);
    }
    return *this;
}

FeatureStore::~FeatureStore() {
    if (!impl_ || !impl_->writable || impl_->broken) return;
    try {
        h5::init();
        impl_->commit();
    } catch (const std::exception& e) {
        spdlog::error("store {}: final commit failed: {}", quoted(impl_->path), e.what());
    }
}

FeatureStore FeatureStore::open(const fs::path& path, Access access, bool durable) {
    h5::init();
    auto impl = std::make_unique<Impl>();
    impl->path = path;
    impl->writable = access != Access::read_only;
    impl->rows_frozen = access == Access::templates_only;
#ifdef FSTORE_HAVE_JOURNAL
    // A reader that finds a killed writer's journal rolls it back, as SQLite readers do: the
    // result is the last committed store, which is what the reader should see. Without write
    // permission it cannot, and says how to fix it.
    // (find_journal may scan the directory: once per open.)
    std::optional<fs::path> leftover = impl->writable ? std::nullopt : journal::find_journal(path);
    if (leftover && ::access(path.c_str(), W_OK) == 0) {
        journal::recover(path);
        spdlog::info("store {}: rolled back an unfinished commit left by a killed writer",
                     quoted(path));
        leftover.reset();
    }
    const auto unfinished_commit = [&] {
        return LockedError("store " + quoted(path) + " has an unfinished commit left by a killed writer (" +
                           quoted(*leftover) + "); open it for writing once (e.g. rerun fstore build) to roll it back");
    };
    if (!impl->writable) impl->reader_lock = ReaderLock::take(path);
    try {
        impl->file = open_file(path, impl->writable, durable);
    } catch (const FormatError&) {
        // What a killed writer left may not open at all (cut short, a torn superblock): the
        // rollback restores it, so say that rather than "restore it from a copy".
        if (leftover) throw unfinished_commit();
        throw;
    }
    if (leftover) throw unfinished_commit();
#else
    impl->file = open_file(path, impl->writable, durable);
#endif
    if (!h5::exists(impl->file, column_names[0]))
        throw FormatError(quoted(path) +
                          " is not an fstore store (no /image_features dataset): pass the path "
                          "of a store written by fstore build");
    for (std::size_t i = 0; i < column_count; ++i) {
        if (!h5::exists(impl->file, column_names[i])) continue;
        if (h5::object_type(impl->file, column_names[i]) != H5O_TYPE_DATASET)
            throw FormatError("store " + quoted(path) + " is damaged: /" + column_names[i] +
                              " is not a dataset (a group or a broken link): restore it from a copy, "
                              "or build a new store (another --h5 path)");
        impl->columns[i] = open_column(impl->file, column_names[i]);
    }
    impl->load_layout();
    if (impl->writable && !impl->rows_frozen) {
        impl->repair();
    } else {
        impl->rows = impl->complete_rows();
    }
    return FeatureStore(std::move(impl));
}

FeatureStore FeatureStore::open_or_create(const fs::path& path, StoreLayout layout, bool durable) {
    h5::init();
    std::error_code ec;
    // An empty file (mktemp's) is taken as a place for the new store, with its permission
    // bits (mktemp's 0600 stays private): it holds nothing.
    if (fs::is_symlink(path, ec) && !fs::exists(path, ec))
        throw NotFoundError("store " + quoted(path) + " is a symlink to " +
                            quoted(fs::read_symlink(path, ec)) +
                            ", which does not exist: point it at a store, or remove the link to create "
                            "the store there");
    std::optional<fs::perms> empty_file_perms;
    if (is_empty_file(path)) {
        if (fs::is_symlink(path, ec))
            throw FormatError(quoted(path) + " is a symlink to an empty file, not a store: point it at a "
                              "store, or remove the link to create the store there");
        if (const auto why = refusal(path, W_OK); !why.empty())
            throw IoError("cannot create store " + quoted(path) + " in place of that empty file (" + why +
                          "): choose a writable --h5 path");
        empty_file_perms = fs::status(path, ec).permissions();
        fs::remove(path, ec);
    }
    if (!fs::exists(path, ec)) {
        if (layout.dim <= 0 || layout.image_tokens <= 0)
            throw UsageError("cannot create store " + quoted(path) + " with D=" +
                             std::to_string(layout.dim) + ", T_img=" +
                             std::to_string(layout.image_tokens) + ": both must be positive");
        const fs::path parent = directory_of(path);
        if (!fs::is_directory(parent, ec))
            throw NotFoundError("cannot create store " + quoted(path) + ": directory " +
                                quoted(parent) + " does not exist; create it first");
        if (const auto why = refusal(parent, W_OK | X_OK); !why.empty())
            throw IoError("cannot create store " + quoted(path) + ": " + why + " in directory " +
                          quoted(parent) + ": choose a writable --h5 path");
        // Build the empty store under a temporary name and rename it into place, so a kill
        // during creation never leaves a half-made store at `path`.
        // A writer killed here before left its temporary behind (an empty store's worth).
        remove_stale_temporaries(path, ".creating-");
        fs::path temp = path;
        temp += ".creating-" + std::to_string(::getpid());
        {
            Impl impl;
            impl.path = temp;
            impl.layout = layout;
            const hid_t id = H5Fcreate(temp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
            if (id < 0) {
                const std::string reason = h5::last_failure().reason;
                fs::remove(temp, ec);  // H5Fcreate may have made it before failing
                throw IoError("cannot create store " + quoted(path) + ": " + reason +
                              ": free space, or choose a writable --h5 path");
            }
            impl.file = h5::File(id);
            try {
                for (std::size_t i = 0; i < column_count; ++i)
                    impl.create_column(static_cast<Column>(i), 0);
                h5::create_group(impl.file, templates_group);
                h5::write_attribute(impl.file, "D", layout.dim);
                h5::write_attribute(impl.file, "T_img", layout.image_tokens);
                h5::write_attribute(impl.file, "created_at", now_local());
                h5::write_attribute(impl.file, "version", std::string("1.0"));
                h5::write_attribute(impl.file, "split_counts", std::string("{}"));
                h5::check_status(H5Fflush(impl.file, H5F_SCOPE_GLOBAL), "cannot flush the new store");
            } catch (...) {
                impl = Impl();
                fs::remove(temp, ec);
                throw;
            }
        }
        if (empty_file_perms) fs::permissions(temp, *empty_file_perms, ec);
        // link(2), unlike rename, never replaces: when two writers create the same new store
        // at once, the second one opens the first one's file (and meets its lock) instead of
        // swapping it out from under it.
        int linked = ::link(temp.c_str(), path.c_str());
        int link_errno = errno;
        if (linked != 0 && (link_errno == EPERM || link_errno == EOPNOTSUPP)) {
            // A file system without hard links: rename is the next best atomic publish.
            linked = ::rename(temp.c_str(), path.c_str());
            link_errno = errno;
        }
        fs::remove(temp, ec);
        if (linked != 0 && link_errno != EEXIST)
            throw IoError("cannot create store " + quoted(path) + ": " + std::strerror(link_errno) +
                          ": choose a writable --h5 path");
#ifdef FSTORE_HAVE_JOURNAL
        // A journal under this name is never this new store's: a deleted store's, or a renamed
        // one's, which it is handed back to.
        if (linked == 0) {
            try {
                journal::release_journal_name(path);
            } catch (...) {
                fs::remove(path, ec);  // the empty store just published: a retry starts afresh
                throw;
            }
        }
#endif
    }
    FeatureStore store = open(path, Access::read_write, durable);
    const StoreLayout have = store.layout();
    if (have.dim != layout.dim || have.image_tokens != layout.image_tokens)
        throw MismatchError("store " + quoted(path) + " has D=" + std::to_string(have.dim) +
                            ", T_img=" + std::to_string(have.image_tokens) +
                            ", not the requested D=" + std::to_string(layout.dim) + ", T_img=" +
                            std::to_string(layout.image_tokens) +
                            ": write to another store path, or use a matching model");
    return store;
}

// ---- accessors --------------------------------------------------------------------------

const fs::path& FeatureStore::path() const { return use(impl_).path; }
bool FeatureStore::writable() const { return use(impl_).writable; }
StoreLayout FeatureStore::layout() const { return use(impl_).layout; }
std::int64_t FeatureStore::rows() const { return use(impl_).rows; }

// ---- rows -------------------------------------------------------------------------------

void FeatureStore::append_batch(const RowBatch& batch) {
    Impl& s = use(impl_);
    s.require_rows_writable("append rows");
    if (batch.rows < 0) throw UsageError("cannot append a negative number of rows");
    if (batch.rows == 0) return;
    if (batch.image_features == nullptr || batch.image_token_features == nullptr ||
        batch.splits == nullptr)
        throw UsageError("append_batch needs image_features, image_token_features and splits");
    if (static_cast<std::int64_t>(batch.splits->size()) != batch.rows)
        throw UsageError("append_batch: " + std::to_string(batch.splits->size()) +
                         " split names for " + std::to_string(batch.rows) + " rows");
    for (const auto& name : *batch.splits)
        if (name.empty())
            throw UsageError("append_batch: split names must not be empty (use \"" +
                             std::string(missing_split) + "\" when unknown)");

    const auto start = static_cast<hsize_t>(s.rows);
    const auto count = static_cast<hsize_t>(batch.rows);
    const std::int64_t new_rows = s.rows + batch.rows;
    try {
        for (auto& dataset : s.columns) set_rows(dataset, start + count);
        h5::Datatype half = h5::half_type();
        // Features first, ids and split last: a torn append (without the journal) then shows
        // fill values where the completeness check looks.
        // The two feature columns hold nearly all the bytes: compressed in parallel and
        // written as whole chunks (store_writer.hpp). The commit below comes after them.
        ChunkWriter& writer = s.chunk_writer();
        for (Column c : {Column::image_features, Column::image_token_features}) {
            const std::size_t row_bytes = row_elements(c, s.layout) * sizeof(std::uint16_t);
            const void* rows = c == Column::image_features ? batch.image_features
                                                           : batch.image_token_features;
            writer.write_rows(s.column(c), half, start, count, row_bytes, rows,
                              writer.policy(index_of(c)));
            // HDF5 1.10 caches the last chunk it looked up (address, size, filter mask) per
            // dataset, and direct chunk writes leave that entry stale: a later read of a
            // chunk rewritten here (the next append's partial-chunk merge, read_rows) would
            // use the old address or mask and fail or return old bytes. Closing the only
            // handle drops the cache; reopening reads the index as written.
            s.columns[index_of(c)].reset();
            s.columns[index_of(c)] = open_column(s.file, name_of(c));
        }
        std::vector<std::int64_t> values(count, missing_label);
        if (batch.labels != nullptr) std::copy(batch.labels, batch.labels + count, values.begin());
        write_rows(s.column(Column::labels), H5T_NATIVE_INT64, start, count, {}, values.data());
        std::iota(values.begin(), values.end(), s.rows);
        write_rows(s.column(Column::ids), H5T_NATIVE_INT64, start, count, {}, values.data());
        h5::write_strings(s.column(Column::split), start, *batch.splits);
        s.add_counts(*batch.splits, +1);
        s.write_split_counts();
        s.commit();
    } catch (...) {
        // The file goes back to its last commit (journal); this object stops taking changes.
        s.abandon();
        throw;
    }
    s.rows = new_rows;
}

void FeatureStore::require_column(Column column) const {
    const Impl& s = use(impl_);
    if (s.has(column) || column == Column::ids || column == Column::labels || column == Column::split)
        return;
    // Only the token features can be missing here (open refuses a file without
    // /image_features), and the repair refuses to invent them for existing rows.
    throw FormatError("store " + quoted(s.path) + " has no /" + name_of(column) + " dataset: the token features of its " +
                      std::to_string(s.rows) + " rows are lost; restore the dataset, or build a new store "
                      "(another --h5 path)");
}

const char* column_name(Column column) { return name_of(column); }

DType FeatureStore::column_dtype(Column column) const {
    const Impl& s = use(impl_);
    if (column == Column::split) throw UsageError("the split column holds strings: use read_splits");
    if (column == Column::ids || column == Column::labels) return DType::i64;
    if (!s.has(column)) return DType::f16;  // require_column refuses reading it
    const h5::Datatype type(H5Dget_type(s.column(column)), "cannot read the type of a feature dataset");
    return h5::is_half(type) ? DType::f16 : DType::f32;
}

Array FeatureStore::read_rows(Column column, const std::vector<std::int64_t>& rows) const {
    Impl& s = use(impl_);
    if (column == Column::split)
        throw UsageError("read_rows cannot return the split column: use read_splits");
    for (std::int64_t r : rows) s.check_index(r);
    require_column(column);

    Array out;
    out.dtype = column_dtype(column);
    out.shape = {static_cast<std::int64_t>(rows.size())};
    const auto per_row = row_shape(column, s.layout);
    for (hsize_t x : per_row) out.shape.push_back(static_cast<std::int64_t>(x));
    const std::size_t row_bytes = row_elements(column, s.layout) * dtype_size(out.dtype);
    out.bytes.resize(rows.size() * row_bytes);
    if (rows.empty()) return out;

    if (!s.has(column)) {  // ids or labels (require_column): as the repair would fill them
        auto* values = reinterpret_cast<std::int64_t*>(out.bytes.data());
        for (std::size_t i = 0; i < rows.size(); ++i)
            values[i] = column == Column::ids ? rows[i] : missing_label;
        return out;
    }

    std::vector<std::int64_t> unique = rows;
    std::sort(unique.begin(), unique.end());
    unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
    const bool direct = unique == rows;  // sorted, no repeats: read straight into the output

    h5::Datatype half = h5::half_type();
    const hid_t mem_type = out.dtype == DType::f16   ? half.get()
                           : out.dtype == DType::f32 ? H5T_NATIVE_FLOAT
                                                     : H5T_NATIVE_INT64;
    std::vector<std::uint8_t> scratch;
    std::uint8_t* target = out.bytes.data();
    if (!direct) {
        scratch.resize(unique.size() * row_bytes);
        target = scratch.data();
    }
    std::size_t offset = 0;
    for (const Run& run : runs_of(unique)) {
        read_rows_into(s.column(column), mem_type, static_cast<hsize_t>(run.start),
                       static_cast<hsize_t>(run.count), per_row, target + offset * row_bytes);
        offset += static_cast<std::size_t>(run.count);
    }
    if (!direct) {
        for (std::size_t i = 0; i < rows.size(); ++i) {
            const auto at = static_cast<std::size_t>(
                std::lower_bound(unique.begin(), unique.end(), rows[i]) - unique.begin());
            std::memcpy(out.bytes.data() + i * row_bytes, scratch.data() + at * row_bytes, row_bytes);
        }
    }
    return out;
}

std::vector<std::string> FeatureStore::read_splits(const std::vector<std::int64_t>& rows) const {
    Impl& s = use(impl_);
    for (std::int64_t r : rows) s.check_index(r);
    std::vector<std::int64_t> unique = rows;
    std::sort(unique.begin(), unique.end());
    unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
    std::vector<std::string> values;
    values.reserve(unique.size());
    for (const Run& run : runs_of(unique)) {
        auto part = s.splits(static_cast<hsize_t>(run.start), static_cast<hsize_t>(run.count));
        std::move(part.begin(), part.end(), std::back_inserter(values));
    }
    std::vector<std::string> out;
    out.reserve(rows.size());
    for (std::int64_t r : rows)
        out.push_back(values[static_cast<std::size_t>(
            std::lower_bound(unique.begin(), unique.end(), r) - unique.begin())]);
    return out;
}

std::vector<std::string> FeatureStore::read_all_splits() const {
    Impl& s = use(impl_);
    return s.splits(0, static_cast<hsize_t>(s.rows));
}

void FeatureStore::truncate_rows(std::int64_t rows) {
    Impl& s = use(impl_);
    s.require_rows_writable("truncate rows");
    if (rows < 0 || rows > s.rows)
        throw UsageError("cannot keep " + std::to_string(rows) + " rows: store " + quoted(s.path) +
                         " has " + std::to_string(s.rows) + " (valid 0.." + std::to_string(s.rows) + ")");
    if (rows == s.rows) return;
    s.change([&] {
        s.add_counts(s.splits(static_cast<hsize_t>(rows), static_cast<hsize_t>(s.rows - rows)), -1);
        s.set_all_rows(rows);
        s.write_split_counts();
        s.commit();
    });
}

std::map<std::string, std::int64_t> FeatureStore::split_counts_from_data() const {
    std::map<std::string, std::int64_t> counts;
    for (const auto& name : read_all_splits()) ++counts[name];
    return counts;
}

std::map<std::string, std::int64_t> FeatureStore::split_counts() const {
    std::map<std::string, std::int64_t> counts;
    const auto json = json_attribute("split_counts");
    if (!json) return counts;
    if (!json->is_object())
        throw FormatError("store " + quoted(use(impl_).path) +
                          ": attribute split_counts is not a JSON object");
    for (const auto& [name, value] : json->items()) {
        if (!value.is_number_integer())
            throw FormatError("store " + quoted(use(impl_).path) + ": split_counts[\"" + name +
                              "\"] is not an integer");
        counts[name] = value.get<std::int64_t>();
    }
    return counts;
}

// ---- templates --------------------------------------------------------------------------

std::vector<std::string> FeatureStore::template_ids() const {
    Impl& s = use(impl_);
    h5::Group group = s.templates(false);
    if (!group.valid()) return {};
    auto ids = h5::link_names(group);
    std::sort(ids.begin(), ids.end());
    return ids;
}

bool FeatureStore::has_template(const std::string& id) const {
    Impl& s = use(impl_);
    if (id.empty() || id.find('/') != std::string::npos || id == "." || id == "..") return false;
    const h5::Group group = s.templates(false);
    return group.valid() && h5::exists(group, id);
}

namespace {
// A template id names a group under templates/ holding text_features; anything else there
// (a dataset, a dangling link, a group of another tool) is a damaged store.
void require_template(const FeatureStore& store, hid_t file, const std::string& id) {
    if (!store.has_template(id))
        throw UsageError("unknown template '" + id + "' in store " + quoted(store.path()) +
                         ": list the stored ones with fstore-access templates");
    const std::string group = std::string(templates_group) + "/" + id;
    const std::string fix = ": remove it with fstore-access clear-templates, then rerun fstore build --run-text";
    if (h5::object_type(file, group) != H5O_TYPE_GROUP)
        throw FormatError("store " + quoted(store.path()) + ": templates/" + id +
                          " is not a template (a dataset or a broken link, not a group)" + fix);
    if (!h5::exists(file, group + "/text_features"))
        throw FormatError("store " + quoted(store.path()) + ": template '" + id +
                          "' has no text_features dataset" + fix);
}
}  // namespace

TemplateInfo FeatureStore::template_info(const std::string& id) const {
    Impl& s = use(impl_);
    require_template(*this, s.file, id);
    h5::Group group = h5::open_group(s.file, std::string(templates_group) + "/" + id);
    TemplateInfo info;
    info.id = id;
    info.has_token_features = h5::exists(group, "text_token_features");
    auto int_attr = [&](const char* name, std::int64_t fallback) {
        auto v = h5::read_attribute(group, name);
        return v && std::holds_alternative<std::int64_t>(*v) ? std::get<std::int64_t>(*v) : fallback;
    };
    auto str_attr = [&](const char* name) {
        auto v = h5::read_attribute(group, name);
        return v && std::holds_alternative<std::string>(*v) ? std::get<std::string>(*v) : std::string();
    };
    // The datasets' shapes are what a read returns (verify reports attributes that disagree);
    // the attributes K, D, T_txt stand in only where a dataset is missing or malformed.
    std::vector<hsize_t> shape;
    if (h5::exists(group, "text_features")) shape = h5::dims(h5::open_dataset(group, "text_features"));
    info.rows = shape.size() == 2 ? static_cast<std::int64_t>(shape[0]) : int_attr("K", 0);
    info.dim = shape.size() == 2 ? static_cast<std::int64_t>(shape[1]) : int_attr("D", 0);
    std::vector<hsize_t> t;
    if (info.has_token_features) t = h5::dims(h5::open_dataset(group, "text_token_features"));
    info.text_tokens = t.size() == 3 ? static_cast<std::int64_t>(t[1]) : int_attr("T_txt", -1);
    info.token_shape.assign(t.begin(), t.end());
    std::vector<hsize_t> texts;
    if (h5::exists(group, "texts")) texts = h5::dims(h5::open_dataset(group, "texts"));
    info.complete = shape.size() == 2 && t.size() == 3 && texts.size() == 1 && t[0] == shape[0] &&
                    t[2] == shape[1] && texts[0] == shape[0];
    info.texts_hash = str_attr("texts_hash");
    info.created_at = str_attr("created_at");
    return info;
}

std::vector<std::string> FeatureStore::template_texts(const std::string& id) const {
    Impl& s = use(impl_);
    require_template(*this, s.file, id);
    const std::string name = std::string(templates_group) + "/" + id + "/texts";
    if (!h5::exists(s.file, name)) return {};
    h5::Dataset texts = h5::open_dataset(s.file, name);
    return h5::read_strings(texts, 0, h5::dims(texts).at(0));
}

Array FeatureStore::read_template(const std::string& id, bool token_features) const {
    Impl& s = use(impl_);
    require_template(*this, s.file, id);
    const std::string name = std::string(templates_group) + "/" + id +
                             (token_features ? "/text_token_features" : "/text_features");
    if (!h5::exists(s.file, name))  // only token features can be missing (require_template)
        throw UsageError("template '" + id + "' has no token features: use --feature text, or rebuild "
                         "its prompts with token features");
    h5::Dataset dataset = h5::open_dataset(s.file, name);
    Array out;
    out.dtype = DType::f32;
    // A damaged dataspace can claim more than any store holds (2^45 rows): refused before
    // the allocation. LZF shrinks data at most ~100x and deflate ~1000x, so a dataset far
    // larger than what it stores is damage, not data (a small one may be all fill value).
    std::uint64_t bytes = sizeof(float);
    bool overflow = false;
    std::string shape;
    for (hsize_t x : h5::dims(dataset)) {
        out.shape.push_back(static_cast<std::int64_t>(x));
        overflow = overflow || __builtin_mul_overflow(bytes, x, &bytes);
        shape += (shape.empty() ? "" : ", ") + std::to_string(x);
    }
    const std::uint64_t stored = H5Dget_storage_size(dataset);
    if (overflow || bytes > std::max<std::uint64_t>(stored, 1) * 1024 + (std::uint64_t{64} << 20)) {
        throw FormatError("store " + quoted(s.path) + " is damaged: " + name + " claims shape (" + shape + ") but stores " +
                          std::to_string(stored) + " bytes; delete the templates with "
                          "`fstore-access clear-templates` and rebuild them with `fstore build --run-text`");
    }
    out.bytes.resize(static_cast<std::size_t>(bytes));
    if (!out.bytes.empty())
        h5::check_status(H5Dread(dataset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                 out.bytes.data()),
                         "cannot read template features");
    return out;
}

void FeatureStore::write_template(const std::string& id, const TemplateRecord& record) {
    Impl& s = use(impl_);
    s.require_writable("write a template");
    if (id.empty() || id.find('/') != std::string::npos || id == "." || id == "..")
        throw UsageError("invalid template id '" + id + "': use a non-empty name without '/'");
    const auto k = static_cast<std::int64_t>(record.texts.size());
    const std::int64_t d = s.layout.dim;
    if (k == 0) throw UsageError("template '" + id + "' has no texts: give at least one prompt");
    if (static_cast<std::int64_t>(record.text_features.size()) != k * d)
        throw DataError("template '" + id + "': text_features holds " +
                        std::to_string(record.text_features.size()) + " values, expected K×D = " +
                        std::to_string(k) + "×" + std::to_string(d));
    const bool tokens = !record.text_token_features.empty();
    if (tokens && (record.text_tokens <= 0 ||
                   static_cast<std::int64_t>(record.text_token_features.size()) !=
                       k * record.text_tokens * d))
        throw DataError("template '" + id + "': text_token_features holds " +
                        std::to_string(record.text_token_features.size()) +
                        " values, expected K×T_txt×D = " + std::to_string(k) + "×" +
                        std::to_string(record.text_tokens) + "×" + std::to_string(d));

    s.change([&] {
        h5::Group root = s.templates(true);
        if (h5::exists(root, id) && H5Ldelete(root, id.c_str(), H5P_DEFAULT) < 0)
            h5::fail("cannot replace template '" + id + "'");
        h5::Group group = h5::create_group(root, id);

        auto make = [&](const char* name, hid_t type, std::vector<hsize_t> shape) {
            DatasetSpec spec;
            spec.chunks = guess_chunk(shape, H5Tget_size(type));
            spec.shape = std::move(shape);
            return create_dataset(group, name, type, spec);
        };
        h5::Datatype f32(H5Tcopy(H5T_IEEE_F32LE), "cannot create the float32 type");
        const auto uk = static_cast<hsize_t>(k), ud = static_cast<hsize_t>(d);
        {
            h5::Dataset features = make("text_features", f32, {uk, ud});
            h5::check_status(H5Dwrite(features, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                      record.text_features.data()),
                             "cannot write template text_features");
        }
        if (tokens) {
            h5::Dataset features =
                make("text_token_features", f32, {uk, static_cast<hsize_t>(record.text_tokens), ud});
            h5::check_status(H5Dwrite(features, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                      record.text_token_features.data()),
                             "cannot write template text_token_features");
        }
        {
            h5::Datatype str = h5::utf8_string_type();
            // h5py sizes chunks of object (vlen) arrays with numpy's 8-byte pointer itemsize.
            DatasetSpec spec;
            spec.shape = {uk};
            spec.chunks = guess_chunk(spec.shape, 8);
            h5::Dataset texts = create_dataset(group, "texts", str, spec);
            h5::write_strings(texts, 0, record.texts);
        }
        h5::write_attribute(group, "K", k);
        h5::write_attribute(group, "D", d);
        h5::write_attribute(group, "T_txt", tokens ? record.text_tokens : std::int64_t{-1});
        h5::write_attribute(group, "texts_hash", texts_hash(record.texts));
        h5::write_attribute(group, "created_at", now_local());
        s.commit();
    });
}

void FeatureStore::clear_templates() {
    Impl& s = use(impl_);
    s.require_writable("clear templates");
    s.change([&] {
        if (h5::exists(s.file, templates_group) && H5Ldelete(s.file, templates_group, H5P_DEFAULT) < 0)
            h5::fail("cannot delete the templates group");
        h5::create_group(s.file, templates_group);
        s.commit();
    });
}

void FeatureStore::remove_templates(const std::vector<std::string>& ids) {
    Impl& s = use(impl_);
    s.require_writable("remove templates");
    s.change([&] {
        if (h5::exists(s.file, templates_group)) {
            for (const auto& id : ids) {
                const std::string path = std::string(templates_group) + "/" + id;
                if (h5::exists(s.file, path) && H5Ldelete(s.file, path.c_str(), H5P_DEFAULT) < 0)
                    h5::fail("cannot delete template '" + id + "'");
            }
        }
        s.commit();
    });
}

// ---- root attributes --------------------------------------------------------------------

std::map<std::string, AttributeValue> FeatureStore::attributes() const {
    Impl& s = use(impl_);
    std::map<std::string, AttributeValue> out;
    for (const auto& name : h5::attribute_names(s.file))
        if (auto value = h5::read_attribute(s.file, name)) out.emplace(name, std::move(*value));
    return out;
}

std::map<std::string, nlohmann::json> FeatureStore::attributes_json() const {
    Impl& s = use(impl_);
    std::map<std::string, nlohmann::json> out;
    for (const auto& name : h5::attribute_names(s.file))
        if (auto value = h5::read_attribute_json(s.file, name)) out.emplace(name, std::move(*value));
    return out;
}

std::optional<AttributeValue> FeatureStore::attribute(const std::string& name) const {
    Impl& s = use(impl_);
    return h5::read_attribute(s.file, name);
}

void FeatureStore::set_attribute(const std::string& name, const AttributeValue& value) {
    Impl& s = use(impl_);
    s.require_writable("set an attribute");
    if (name.empty()) throw UsageError("attribute names must not be empty");
    if (name == "split_counts")
        throw UsageError("split_counts is kept in step with the rows by the store itself: "
                         "append or truncate rows instead of setting it");
    s.change([&] { h5::write_attribute(s.file, name, value); });
}

std::optional<nlohmann::json> FeatureStore::json_attribute(const std::string& name) const {
    const auto value = attribute(name);
    if (!value) return std::nullopt;
    if (const auto* i = std::get_if<std::int64_t>(&*value)) return nlohmann::json(*i);
    if (const auto* d = std::get_if<double>(&*value)) return nlohmann::json(*d);
    auto parsed = nlohmann::json::parse(std::get<std::string>(*value), nullptr, false);
    if (parsed.is_discarded())
        throw FormatError("attribute '" + name + "' of store " + quoted(use(impl_).path) +
                          " does not hold JSON: it was not written by fstore or the reference");
    return parsed;
}

void FeatureStore::set_json_attribute(const std::string& name, const nlohmann::json& value) {
    set_attribute(name, python_dumps(nlohmann::ordered_json(value)));
}

void FeatureStore::commit() {
    Impl& s = use(impl_);
    if (!s.writable) return;
    s.require_writable("commit");
    s.change([&] { s.commit(); });
}

void FeatureStore::set_writer_options(const ChunkWriterOptions& options) {
    Impl& s = use(impl_);
    s.writer_options = options;
    s.writer.reset();  // the next append starts a writer with these options
}

ChunkWriterStats FeatureStore::writer_stats() const {
    Impl& s = use(impl_);
    return s.writer ? s.writer->stats() : ChunkWriterStats{};
}

}  // namespace fstore
