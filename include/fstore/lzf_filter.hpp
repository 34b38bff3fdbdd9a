// LZF compression for HDF5, byte-compatible with h5py's "lzf" filter.
//
// HDF5 filter id 32000, added with the *optional* flag and client data
// {4, 261, chunk_bytes} (filter version, liblzf version, uncompressed chunk size), exactly as
// h5py's lzf_filter.c does. A stored chunk is the raw output of liblzf's lzf_compress, with
// no header. Compression uses an output buffer the size of the input: when the chunk does
// not shrink the filter fails, and because it is optional HDF5 stores that chunk raw and
// sets the filter's bit in the chunk's filter mask. Decompression handles both.
//
// One implementation serves two users:
//  - fstore itself: `register_filter()` (called by every store open/create) makes the
//    filter available in this process;
//  - HDF5 tools (h5dump, h5ls, HDFView, h5py without the built-in filter): the same code is
//    built as the dynamic plugin `plugins/libfstore_lzf_plugin.so`, found through
//    HDF5_PLUGIN_PATH.
//
// `compress`/`decompress` are plain functions on buffers (no HDF5 involved) so callers can
// compress chunks in parallel threads and write them with H5Dwrite_chunk.
#pragma once

#include <cstddef>

#include <hdf5.h>

namespace fstore::lzf {

inline constexpr H5Z_filter_t filter_id = 32000;
inline constexpr unsigned filter_version = 4;  // cd_values[0], h5py's H5PY_FILTER_LZF_VERSION
inline constexpr unsigned lzf_version = 0x0105;  // cd_values[1], liblzf's LZF_VERSION (261)

// Compresses `size` bytes of `in` into `out` (room for `capacity` bytes). Returns the
// compressed size, or 0 when the result would not fit in `capacity`: with
// capacity == size that means "store this chunk raw" (HDF5 filter mask bit set).
std::size_t compress(const void* in, std::size_t size, void* out, std::size_t capacity) noexcept;

// Decompresses `size` bytes of `in` into `out`. Returns the decompressed size, or 0 when
// `capacity` is too small (errno E2BIG) or the input is not LZF data (errno EINVAL).
std::size_t decompress(const void* in, std::size_t size, void* out, std::size_t capacity) noexcept;

// The filter's class: what both the in-process registration and the plugin hand to HDF5.
const H5Z_class2_t* filter_class() noexcept;

// Registers the filter with this process's HDF5 library. Idempotent and thread-safe; throws
// fstore::InternalError if HDF5 refuses.
void register_filter();

// Adds the lzf filter to a dataset creation property list (which must set chunking), as
// h5py's `compression="lzf"` does; the chunk size goes into the client data when the
// dataset is created. Throws fstore::InternalError on failure.
void add_to(hid_t dcpl);

}  // namespace fstore::lzf
