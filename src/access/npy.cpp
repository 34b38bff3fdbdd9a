#include "fstore/npy.hpp"

#include <cstdio>
#include <memory>
#include <set>
#include <system_error>

#include <unistd.h>
#include <zip.h>

#include "fstore/error.hpp"

namespace fstore::npy {
namespace {

std::uint64_t element_count(const std::vector<std::int64_t>& shape) {
    std::uint64_t count = 1;
    for (const auto extent : shape) count *= static_cast<std::uint64_t>(extent);
    return count;
}

// A sibling of `path` to write into before renaming: same directory, so rename is atomic.
std::filesystem::path partial_path(const std::filesystem::path& path) {
    auto partial = path;
    partial += ".partial-" + std::to_string(::getpid());
    return partial;
}

void check_directory(const std::filesystem::path& path) {
    const auto parent = path.parent_path();
    std::error_code ec;
    if (!parent.empty() && !std::filesystem::is_directory(parent, ec)) {
        throw NotFoundError("cannot write '" + path.string() + "': directory '" + parent.string() +
                            "' does not exist: create it or choose another --out path");
    }
    if (std::filesystem::is_directory(path, ec)) {
        throw UsageError("cannot write '" + path.string() + "': it is a directory: pass a file name to --out");
    }
}

void move_into_place(const std::filesystem::path& from, const std::filesystem::path& to) {
    std::error_code ec;
    std::filesystem::rename(from, to, ec);
    if (ec) {
        std::filesystem::remove(from, ec);
        throw DataError("cannot write '" + to.string() + "': " + ec.message() + ": check the --out path");
    }
}

}  // namespace

const char* descr(DType dtype) {
    switch (dtype) {
        case DType::f16: return "<f2";
        case DType::f32: return "<f4";
        case DType::i64: return "<i8";
    }
    throw InternalError("npy: unknown dtype");
}

std::string header(DType dtype, const std::vector<std::int64_t>& shape) {
    std::string dict = "{'descr': '";
    dict += descr(dtype);
    dict += "', 'fortran_order': False, 'shape': (";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        dict += std::to_string(shape[i]);
        if (shape.size() == 1 || i + 1 < shape.size()) dict += ",";
        if (i + 1 < shape.size()) dict += " ";
    }
    dict += "), }";
    // magic(6) + version(2) + length(2) + dict + padding + '\n' is a multiple of 64, as
    // numpy writes it (aligned data for memory mapping).
    const std::size_t prefix = 10;
    std::size_t total = prefix + dict.size() + 1;
    total = (total + 63) / 64 * 64;
    dict.append(total - prefix - dict.size() - 1, ' ');
    dict += '\n';
    if (dict.size() > 65535) throw UsageError("npy: array has too many dimensions for a v1.0 header");

    std::string out = "\x93NUMPY";
    out += static_cast<char>(1);
    out += static_cast<char>(0);
    out += static_cast<char>(dict.size() & 0xff);
    out += static_cast<char>((dict.size() >> 8) & 0xff);
    out += dict;
    return out;
}

void write_npy(const std::filesystem::path& path, const Array& array) {
    StreamWriter writer(path, array.dtype, array.shape);
    writer.append(array.bytes.data(), array.bytes.size());
    writer.finish();
}

void write_npz(const std::filesystem::path& path, const std::vector<std::pair<std::string, Array>>& members) {
    check_directory(path);
    std::set<std::string> keys;
    for (const auto& [key, array] : members) {
        if (!keys.insert(key).second) throw InternalError("npz: duplicate member '" + key + "'");
        if (array.bytes.size() != element_count(array.shape) * dtype_size(array.dtype)) {
            throw InternalError("npz: member '" + key + "' has " + std::to_string(array.bytes.size()) +
                                " bytes, not what its shape says");
        }
    }
    const auto partial = partial_path(path);
    int error = 0;
    zip_t* archive = zip_open(partial.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &error);
    if (archive == nullptr) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, error);
        const std::string message = zip_error_strerror(&ze);
        zip_error_fini(&ze);
        throw DataError("cannot create '" + path.string() + "': " + message + ": check the --out path");
    }
    auto fail = [&](const std::string& what) {
        const std::string message = zip_strerror(archive);
        zip_discard(archive);
        std::error_code ec;
        std::filesystem::remove(partial, ec);
        throw DataError("cannot write '" + path.string() + "' (" + what + "): " + message);
    };
    // libzip has no concatenating source: each member (header + data) is one buffer, kept
    // alive until zip_close(), which is when libzip reads the sources.
    std::vector<std::string> blobs;
    blobs.reserve(members.size());
    for (std::size_t i = 0; i < members.size(); ++i) {
        const auto& [key, array] = members[i];
        std::string blob = header(array.dtype, array.shape);
        blob.append(reinterpret_cast<const char*>(array.bytes.data()), array.bytes.size());
        blobs.push_back(std::move(blob));
        zip_source_t* source = zip_source_buffer(archive, blobs.back().data(), blobs.back().size(), 0);
        if (source == nullptr) fail("member " + key);
        const zip_int64_t index = zip_file_add(archive, (key + ".npy").c_str(), source, ZIP_FL_ENC_UTF_8);
        if (index < 0) {
            zip_source_free(source);
            fail("member " + key);
        }
        if (zip_set_file_compression(archive, static_cast<zip_uint64_t>(index), ZIP_CM_STORE, 0) != 0) {
            fail("member " + key);
        }
    }
    if (members.empty()) {
        // libzip writes nothing for an empty archive; numpy expects a valid (empty) zip.
        zip_discard(archive);
        std::FILE* file = std::fopen(partial.c_str(), "wb");
        if (file == nullptr) throw DataError("cannot create '" + path.string() + "': check the --out path");
        static const unsigned char empty_zip[22] = {0x50, 0x4b, 0x05, 0x06};
        const bool ok = std::fwrite(empty_zip, 1, sizeof empty_zip, file) == sizeof empty_zip;
        if (std::fclose(file) != 0 || !ok) throw DataError("cannot write '" + path.string() + "'");
    } else if (zip_close(archive) != 0) {
        fail("close");
    }
    move_into_place(partial, path);
}

StreamWriter::StreamWriter(const std::filesystem::path& path, DType dtype, std::vector<std::int64_t> shape)
    : path_(path), partial_(partial_path(path)) {
    check_directory(path);
    expected_ = element_count(shape) * dtype_size(dtype);
    out_.open(partial_, std::ios::binary | std::ios::trunc);
    if (!out_) throw DataError("cannot create '" + path.string() + "': check that its directory is writable");
    const auto head = header(dtype, shape);
    out_.write(head.data(), static_cast<std::streamsize>(head.size()));
}

StreamWriter::~StreamWriter() {
    if (!finished_) {
        out_.close();
        std::error_code ec;
        std::filesystem::remove(partial_, ec);
    }
}

void StreamWriter::append(const void* data, std::size_t bytes) {
    if (written_ + bytes > expected_) throw InternalError("npy: more data than the announced shape holds");
    out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
    if (!out_) throw DataError("cannot write '" + path_.string() + "': disk full or not writable");
    written_ += bytes;
}

void StreamWriter::finish() {
    if (written_ != expected_) throw InternalError("npy: fewer elements written than the announced shape holds");
    out_.close();
    if (!out_) throw DataError("cannot write '" + path_.string() + "': disk full or not writable");
    move_into_place(partial_, path_);
    finished_ = true;
}

}  // namespace fstore::npy
