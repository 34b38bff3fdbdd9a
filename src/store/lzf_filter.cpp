// The LZF filter shared by libfstore (register_filter) and the HDF5 plugin module
// (lzf_plugin.cpp). Behaviour mirrors h5py's lzf_filter.c so files are interchangeable.
#include "fstore/lzf_filter.hpp"

#include <cerrno>
#include <climits>
#include <mutex>
#include <string>

#include <lzf.h>

#include "fstore/error.hpp"

namespace fstore::lzf {
namespace {

// HDF5 may be built with its own allocator bookkeeping: buffers it frees must come from it.
void* h5_alloc(std::size_t size) noexcept { return H5allocate_memory(size, false); }
void h5_free(void* p) noexcept {
    if (p != nullptr) H5free_memory(p);
}

// set_local: fill in {filter version, liblzf version, chunk bytes} when the dataset is
// created, keeping any values already there (h5py does the same).
herr_t set_local(hid_t dcpl, hid_t type, hid_t /*space*/) noexcept {
    unsigned flags = 0;
    std::size_t count = 8;
    unsigned values[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (H5Pget_filter_by_id2(dcpl, filter_id, &flags, &count, values, 0, nullptr, nullptr) < 0)
        return -1;
    if (count < 3) count = 3;
    if (values[0] == 0) values[0] = filter_version;
    if (values[1] == 0) values[1] = lzf_version;

    hsize_t chunk[H5S_MAX_RANK];
    const int rank = H5Pget_chunk(dcpl, H5S_MAX_RANK, chunk);
    if (rank < 0) return -1;
    std::size_t bytes = H5Tget_size(type);
    if (bytes == 0) return -1;
    for (int i = 0; i < rank; ++i) bytes *= static_cast<std::size_t>(chunk[i]);
    if (bytes > UINT_MAX) return -1;  // HDF5 chunks are < 4 GiB anyway
    values[2] = static_cast<unsigned>(bytes);
    return H5Pmodify_filter(dcpl, filter_id, flags, count, values) < 0 ? -1 : 1;
}

// The filter callback: returns the new data size, or 0 for failure. Failure while
// compressing is normal (the chunk did not shrink): the filter is optional, so HDF5 then
// stores the chunk raw and marks it in the chunk's filter mask.
std::size_t filter(unsigned flags, std::size_t cd_count, const unsigned cd_values[],
                   std::size_t nbytes, std::size_t* buf_size, void** buf) noexcept {
    void* out = nullptr;
    std::size_t out_size = 0;
    std::size_t status = 0;

    if ((flags & H5Z_FLAG_REVERSE) == 0) {
        out_size = *buf_size;  // never larger than the input: else store raw
        out = h5_alloc(out_size);
        if (out == nullptr) return 0;
        status = compress(*buf, nbytes, out, out_size);
    } else {
        out_size = (cd_count >= 3 && cd_values[2] != 0) ? cd_values[2] : *buf_size;
        while (status == 0) {
            h5_free(out);
            out = h5_alloc(out_size);
            if (out == nullptr) return 0;
            errno = 0;
            status = decompress(*buf, nbytes, out, out_size);
            if (status == 0) {
                if (errno != E2BIG) break;  // EINVAL: not LZF data
                out_size += *buf_size;
            }
        }
    }

    if (status == 0) {
        h5_free(out);
        return 0;
    }
    h5_free(*buf);
    *buf = out;
    *buf_size = out_size;
    return status;
}

const H5Z_class2_t lzf_class = {
    H5Z_CLASS_T_VERS,
    filter_id,
    1,  // encoder present
    1,  // decoder present
    "lzf",
    nullptr,  // can_apply: any type
    set_local,
    filter,
};

}  // namespace

std::size_t compress(const void* in, std::size_t size, void* out, std::size_t capacity) noexcept {
    if (size == 0 || size > UINT_MAX) return 0;
    if (capacity > UINT_MAX) capacity = UINT_MAX;
    return lzf_compress(in, static_cast<unsigned>(size), out, static_cast<unsigned>(capacity));
}

std::size_t decompress(const void* in, std::size_t size, void* out, std::size_t capacity) noexcept {
    if (size > UINT_MAX) {
        errno = EINVAL;
        return 0;
    }
    if (capacity > UINT_MAX) capacity = UINT_MAX;
    return lzf_decompress(in, static_cast<unsigned>(size), out, static_cast<unsigned>(capacity));
}

const H5Z_class2_t* filter_class() noexcept { return &lzf_class; }

void register_filter() {
    // call_once makes registration race-free; HDF5 itself tolerates re-registration, but
    // this keeps the cost of every later call at one atomic load.
    static std::once_flag once;
    std::call_once(once, [] {
        if (H5Zregister(&lzf_class) < 0)
            throw InternalError(
                "cannot register the LZF filter (id 32000) with HDF5: check that the HDF5 "
                "library fstore runs with is the one it was built against");
    });
}

void add_to(hid_t dcpl) {
    register_filter();
    if (H5Pset_filter(dcpl, filter_id, H5Z_FLAG_OPTIONAL, 0, nullptr) < 0)
        throw InternalError("cannot add the LZF filter to a dataset creation property list");
}

}  // namespace fstore::lzf
