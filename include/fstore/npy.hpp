// NumPy .npy / .npz output, so query results open with a plain `numpy.load(path)`.
//
// .npy: format version 1.0 (magic "\x93NUMPY", 1, 0, little-endian uint16 header length,
// a Python-dict header padded with spaces to a multiple of 64 bytes and ended by '\n'),
// then the raw C-order elements. Element types are the three a store holds: '<f2' (half,
// written as its bit patterns), '<f4' and '<i8'.
// .npz: a zip archive (libzip) of .npy members named "<key>.npy", stored uncompressed
// (feature data barely compresses; storing keeps writes at disk speed). Zip64 is used by
// libzip when members exceed 4 GiB; numpy reads it.
//
// Every writer creates the file next to its final path and renames it into place when it
// is complete, so a failed or interrupted write never leaves a truncated file behind.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "fstore/feature_store.hpp"

namespace fstore::npy {

// "<f2", "<f4" or "<i8".
const char* descr(DType dtype);

// The complete v1.0 header (magic, version, length, dict, padding) for a C-order array.
std::string header(DType dtype, const std::vector<std::int64_t>& shape);

// Writes `array` as one .npy file. Throws NotFoundError when the directory does not exist,
// DataError when the file cannot be written.
void write_npy(const std::filesystem::path& path, const Array& array);

// Writes `members` (key -> array, in this order) as an .npz archive; keys must be unique.
void write_npz(const std::filesystem::path& path, const std::vector<std::pair<std::string, Array>>& members);

// Streams one .npy file whose shape is known up front: rows of a large selection are
// appended block by block instead of being held in memory together.
class StreamWriter {
public:
    StreamWriter(const std::filesystem::path& path, DType dtype, std::vector<std::int64_t> shape);
    StreamWriter(const StreamWriter&) = delete;
    StreamWriter& operator=(const StreamWriter&) = delete;
    ~StreamWriter();  // without finish(): removes the partial file

    // Appends raw little-endian elements (C order). Throws InternalError past the shape.
    void append(const void* data, std::size_t bytes);
    // Checks that exactly the announced bytes were written, then moves the file into place.
    void finish();

private:
    std::filesystem::path path_;
    std::filesystem::path partial_;
    std::ofstream out_;
    std::uint64_t expected_ = 0;
    std::uint64_t written_ = 0;
    bool finished_ = false;
};

}  // namespace fstore::npy
