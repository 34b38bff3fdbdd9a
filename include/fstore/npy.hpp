// NumPy .npy / .npz output, so query results open with a plain `numpy.load(path)`.
//
// .npy: format version 1.0 (magic "\x93NUMPY", 1, 0, little-endian uint16 header length,
// a Python-dict header padded with spaces to a multiple of 64 bytes and ended by '\n'),
// then the raw C-order elements. Element types are the three a store holds: '<f2' (half,
// written as its bit patterns), '<f4' and '<i8'.
// .npz: a zip archive of .npy members named "<key>.npy", stored uncompressed (feature data
// barely compresses; storing keeps writes at disk speed), built in memory by libzip and
// then written out like any other bytes. Zip64 is used by libzip when members exceed
// 4 GiB; numpy reads it.
//
// Where the bytes go (OutputFile, behind every --out):
// - a new name, an existing regular file, or a symlink to one: a temporary file in the
//   final file's directory, renamed onto it when complete, so a failed or interrupted write
//   never leaves a truncated file. A symlink stays a symlink (its final target is
//   replaced); an existing file keeps its permission bits (and, where allowed, its owner).
// - an existing file that is not a regular file (character device, FIFO, /dev/stdout,
//   /proc/self/fd/N): the bytes are written straight into it; it is never removed or
//   replaced. Any name is accepted for these; otherwise the name must end in .npy / .npz.
// Failures throw one-line errors: UsageError (no name, wrong extension, a directory),
// NotFoundError (the directory does not exist), IoError (disk full, file too large, EIO,
// directory not writable or read-only).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "fstore/feature_store.hpp"

namespace fstore::npy {

// "<f2", "<f4" or "<i8".
const char* descr(DType dtype);

// The complete v1.0 header (magic, version, length, dict, padding) for a C-order array.
std::string header(DType dtype, const std::vector<std::int64_t>& shape);

// What a writer produces: its --out name must end in ".npy" or ".npz".
enum class FileFormat { npy, npz };

// Checks an --out value before any work is done, with the errors OutputFile would throw
// (UsageError: empty, a directory, not ending in the format's extension; NotFoundError:
// its directory does not exist). Opens and creates nothing.
void check_output_path(const std::filesystem::path& path, FileFormat format);

// Whether --out `path` is written into this process's standard output (/dev/stdout,
// /proc/self/fd/1, or a FIFO that stdout is): the tools then print nothing else there, which
// would end up inside the array file. With `json` that is a UsageError naming both. A
// device stdout also is (/dev/null) or a file replaced by rename never mixes: false.
bool takes_stdout(const std::filesystem::path& path, bool json);

// One output file, written as described at the top of this header. Not copyable.
class OutputFile {
public:
    // Checks the name (as check_output_path) and opens the temporary file or the target.
    OutputFile(const std::filesystem::path& path, FileFormat format);
    OutputFile(const OutputFile&) = delete;
    OutputFile& operator=(const OutputFile&) = delete;
    ~OutputFile();  // without commit(): closes and removes the temporary file

    // Writes all `bytes`; IoError when the file system refuses them.
    void write(const void* data, std::size_t bytes);
    // Closes the file and, for a temporary file, renames it onto the target.
    void commit();

private:
    std::filesystem::path path_;       // as the user named it, for messages
    std::filesystem::path target_;     // the file that gets replaced (symlinks resolved)
    std::filesystem::path temporary_;  // empty when writing straight into the target
    int fd_ = -1;
    bool committed_ = false;
};

// Writes `array` as one .npy file.
void write_npy(const std::filesystem::path& path, const Array& array);

// Writes `members` (key -> array, in this order) as an .npz archive; keys must be unique.
void write_npz(const std::filesystem::path& path, const std::vector<std::pair<std::string, Array>>& members);

// Streams one .npy file whose shape is known up front: rows of a large selection are
// appended block by block instead of being held in memory together.
class StreamWriter {
public:
    StreamWriter(const std::filesystem::path& path, DType dtype, std::vector<std::int64_t> shape);

    // Appends raw little-endian elements (C order). Throws InternalError past the shape.
    void append(const void* data, std::size_t bytes);
    // Checks that exactly the announced bytes were written, then moves the file into place.
    // Without finish(), the partial file is removed.
    void finish();

private:
    OutputFile out_;
    std::uint64_t expected_ = 0;
    std::uint64_t written_ = 0;
};

}  // namespace fstore::npy
