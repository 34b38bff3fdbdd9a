// Small RAII layer over the HDF5 C API, and the typed helpers the store schema needs.
//
// Every hid_t fstore opens lives in a `Handle`, which closes it with the matching H5*close
// exactly once (move-only). HDF5 failures become fstore errors whose one-line message says
// what fstore was doing plus HDF5's innermost reason; HDF5's own stack printing is
// switched off (`init()`), so users never see raw error stacks.
//
// Types written here are the ones h5py writes and expects: the IEEE half type h5py maps to
// numpy.float16, little-endian int64/float32/float64, variable-length null-terminated UTF-8
// strings (h5py `string_dtype('utf-8')`). String attributes are scalar vlen UTF-8, as h5py
// writes `attrs[name] = "text"`.
//
// Thread safety: Debian's HDF5 is built thread-safe (one global lock), so handles may be
// used from any thread, one call at a time per object.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <hdf5.h>
#include <nlohmann/json.hpp>

namespace fstore::h5 {

// Registers the LZF filter (once per process) and silences HDF5's automatic error printing
// for the calling thread. Every fstore entry point that calls HDF5 calls this first.
void init();

// What the calling thread's HDF5 error stack says about the call that just failed.
struct Failure {
    // The innermost (most specific) description, without the internal values HDF5 appends:
    // "truncated file: eof = 2000, sblock->base_addr = 0, ..." reads "truncated file", and
    // "unable to open file: name = 'x', errno = 13, error message = 'Permission denied', ..."
    // reads "unable to open file (permission denied)". Empty when the stack is empty.
    std::string reason;
    bool lock = false;       // a file-locking failure
    bool truncated = false;  // the file ends before where its superblock says it does
    // The superblock (version 3) says a writer has the file open: a live SWMR writer, or
    // one that crashed without closing it (h5clear -s clears the mark).
    bool marked_open = false;
    bool io = false;  // the file system refused a read/write/seek (see errno for why)
    bool filter = false;  // a filter (decompression) failed: the data itself is bad
};
Failure last_failure();

// Throws fstore::FormatError("<what>: <HDF5 reason>"): HDF5 calls fail on unreadable or
// inconsistent files far more often than on anything else.
[[noreturn]] void fail(const std::string& what);
// Throws for a failed H5Dread of rows [start, start + count) of `dataset`, naming the store,
// the rows and the dataset: IoError when the file system failed the read, FormatError when
// the data is damaged there (a chunk that does not decompress). Call it right after the
// failed read: it takes errno and HDF5's error stack first.
[[noreturn]] void fail_row_read(hid_t dataset, hsize_t start, hsize_t count);
// Returns `id` / `status`, or calls fail(what) when it is negative.
hid_t check(hid_t id, const char* what);
herr_t check_status(herr_t status, const char* what);

// A uniquely owned HDF5 identifier closed by `Close`.
template <herr_t (*Close)(hid_t)>
class Handle {
public:
    Handle() = default;
    explicit Handle(hid_t id) noexcept : id_(id) {}
    Handle(hid_t id, const char* what) : id_(check(id, what)) {}
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    Handle(Handle&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)) {}
    Handle& operator=(Handle&& other) noexcept {
        if (this != &other) {
            reset();
            id_ = std::exchange(other.id_, H5I_INVALID_HID);
        }
        return *this;
    }
    ~Handle() { reset(); }

    hid_t get() const noexcept { return id_; }
    operator hid_t() const noexcept { return id_; }  // NOLINT: pass straight to H5* calls
    bool valid() const noexcept { return id_ >= 0; }
    explicit operator bool() const noexcept { return valid(); }
    hid_t release() noexcept { return std::exchange(id_, H5I_INVALID_HID); }
    void reset() noexcept {
        if (id_ >= 0) Close(id_);
        id_ = H5I_INVALID_HID;
    }

private:
    hid_t id_ = H5I_INVALID_HID;
};

using File = Handle<H5Fclose>;
using Group = Handle<H5Gclose>;
using Dataset = Handle<H5Dclose>;
using Dataspace = Handle<H5Sclose>;
using Datatype = Handle<H5Tclose>;
using PropList = Handle<H5Pclose>;
using Attribute = Handle<H5Aclose>;

// ---- types ----------------------------------------------------------------------------
// IEEE binary16, little-endian, laid out so that H5Tequal() with h5py's float16 is true.
Datatype half_type();
// Variable-length, null-terminated UTF-8 string (h5py string_dtype('utf-8')).
Datatype utf8_string_type();
// Whether `type` is a 2-byte float with IEEE half's field layout and exponent bias (not,
// e.g., a bfloat16 that h5py users may define).
bool is_half(hid_t type);

// ---- objects --------------------------------------------------------------------------
// Whether `name` (a single path component, or a path whose parents exist) is a link in loc.
bool exists(hid_t loc, const std::string& name);
// What `name` in loc is: H5O_TYPE_GROUP, H5O_TYPE_DATASET, ...; H5O_TYPE_UNKNOWN when it is
// missing or a broken link.
H5O_type_t object_type(hid_t loc, const std::string& name);
Dataset open_dataset(hid_t loc, const std::string& name, hid_t dapl = H5P_DEFAULT);
Group open_group(hid_t loc, const std::string& name);
Group create_group(hid_t loc, const std::string& name);
std::vector<hsize_t> dims(hid_t dataset);
// Chunk shape of a chunked dataset; empty for contiguous/compact layouts.
std::vector<hsize_t> chunk_dims(hid_t dataset);
// Names of the links in `group`, in name order.
std::vector<std::string> link_names(hid_t group);

// A hyperslab [start, start+count) along the first dimension, whole extent in the others.
Dataspace select_rows(hid_t dataset, hsize_t start, hsize_t count);
// A simple dataspace of `shape` for memory buffers.
Dataspace simple_space(const std::vector<hsize_t>& shape);

// Reads / writes variable-length strings of a 1-D dataset's rows [start, start+count).
std::vector<std::string> read_strings(hid_t dataset, hsize_t start, hsize_t count);
void write_strings(hid_t dataset, hsize_t start, const std::vector<std::string>& values);

// ---- attributes -----------------------------------------------------------------------
// A scalar attribute's value: any integer type reads as int64, any float as double, any
// string (fixed or variable length) as std::string.
using AttrValue = std::variant<std::int64_t, double, std::string>;

bool has_attribute(hid_t obj, const std::string& name);
// nullopt when absent or not a scalar int/float/string.
std::optional<AttrValue> read_attribute(hid_t obj, const std::string& name);
std::vector<std::string> attribute_names(hid_t obj);
// Any attribute as h5py gives it, in JSON: integers (uint64 too) and floats (non-finite as
// fstore::json_number marks them), strings, h5py's booleans as true/false, arrays as nested
// lists; null for what JSON cannot hold (compound, opaque, references, an empty dataspace).
// nullopt when absent.
std::optional<nlohmann::json> read_attribute_json(hid_t obj, const std::string& name);
// Writes (replacing any existing attribute of that name): int64 LE, float64 LE, vlen UTF-8.
void write_attribute(hid_t obj, const std::string& name, const AttrValue& value);
void delete_attribute(hid_t obj, const std::string& name);

}  // namespace fstore::h5
