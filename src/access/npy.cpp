#include "fstore/npy.hpp"

#include <algorithm>
#include <cerrno>
#include <memory>
#include <optional>
#include <set>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <zip.h>

#include "fstore/error.hpp"
#include "fstore/files.hpp"

namespace fstore::npy {
namespace {

namespace fs = std::filesystem;

std::uint64_t element_count(const std::vector<std::int64_t>& shape) {
    std::uint64_t count = 1;
    for (const auto extent : shape) count *= static_cast<std::uint64_t>(extent);
    return count;
}

std::string errno_text(int error) { return std::generic_category().message(error); }

// A write the file system refused: exit 10, with the fix that fits the cause.
[[noreturn]] void throw_write_error(const fs::path& path, int error) {
    const bool out_of_space = error == ENOSPC || error == EDQUOT || error == EFBIG;
    throw IoError("cannot write " + quoted(path) + ": " + errno_text(error) +
                  (out_of_space ? ": free space or choose another --out" : ": check the device or choose another --out"));
}

// Creating or renaming a file in `directory` failed.
[[noreturn]] void throw_directory_error(const fs::path& path, const fs::path& directory, int error) {
    if (error == ENOENT || error == ENOTDIR) {
        throw NotFoundError("cannot write " + quoted(path) + ": directory " + quoted(directory) +
                            " does not exist: create it or choose another --out path");
    }
    if (error == EACCES || error == EPERM || error == EROFS) {
        throw IoError("cannot write " + quoted(path) + ": directory " + quoted(directory) + " is not writable (" +
                      errno_text(error) + "): choose another --out");
    }
    throw_write_error(path, error);
}

const char* extension(FileFormat format) { return format == FileFormat::npy ? ".npy" : ".npz"; }

void check_extension(const fs::path& path, FileFormat format) {
    const std::string name = path.filename().string();
    const std::string wanted = extension(format);
    if (name.size() < wanted.size() || name.compare(name.size() - wanted.size(), wanted.size(), wanted) != 0) {
        throw UsageError("--out " + quoted(path) + " must end in " + wanted +
                         (format == FileFormat::npy ? " (one NumPy array)" : " (a NumPy archive of arrays)"));
    }
}

// N when `path` is this process's own descriptor N (/proc/self/fd/N, /dev/fd/N), else -1.
// Such a path is a magic link: opening it again may fail (a socket) or start at offset 0
// (a regular file behind stdout), so the descriptor itself is written to.
int own_descriptor(const fs::path& path) {
    std::error_code ec;
    const auto directory = fs::canonical(directory_of(path), ec);
    if (ec || directory != fs::path("/proc/" + std::to_string(::getpid()) + "/fd")) return -1;
    const std::string name = path.filename().string();
    if (name.empty() || name.size() > 9 || name.find_first_not_of("0123456789") != std::string::npos) return -1;
    return std::stoi(name);
}

// Where an --out path's bytes go.
struct Destination {
    enum class Kind { replace, stream, own_descriptor };
    Kind kind = Kind::replace;
    fs::path target;                  // replace: the file to replace; stream: what to open
    int descriptor = -1;              // own_descriptor
    std::optional<struct stat> existing;  // replace of an existing file: its mode and owner
};

Destination resolve(const fs::path& path, FileFormat format) {
    if (path.empty()) throw UsageError("--out needs a file name");
    // CLI11 hands "--out --json" the next option as its value.
    if (path.string().rfind("--", 0) == 0) throw UsageError("--out needs a file name (got option " + quoted(path) + ")");
    // Follow symlinks by hand: the file to replace is the final target, the links stay.
    fs::path final_path = path;
    for (int hops = 0;; ++hops) {
        if (const int descriptor = own_descriptor(final_path); descriptor >= 0) {
            return {Destination::Kind::own_descriptor, path, descriptor, std::nullopt};
        }
        std::error_code ec;
        if (!fs::is_symlink(fs::symlink_status(final_path, ec))) break;
        if (hops == 40) throw NotFoundError("cannot write " + quoted(path) + ": " + errno_text(ELOOP));
        const auto link = fs::read_symlink(final_path, ec);
        if (ec) break;
        final_path = link.is_absolute() ? link : directory_of(final_path) / link;
    }
    struct stat existing {};
    if (::stat(path.c_str(), &existing) == 0) {
        if (S_ISDIR(existing.st_mode)) {
            throw UsageError("cannot write " + quoted(path) + ": it is a directory: pass a file name to --out");
        }
        if (!S_ISREG(existing.st_mode)) return {Destination::Kind::stream, path, -1, std::nullopt};
        check_extension(path, format);
        return {Destination::Kind::replace, final_path, -1, existing};
    }
    check_extension(path, format);
    const auto directory = directory_of(final_path);
    std::error_code ec;
    if (!fs::is_directory(directory, ec)) {
        throw_directory_error(path, directory, ec ? ec.value() : ENOENT);
    }
    return {Destination::Kind::replace, final_path, -1, std::nullopt};
}

// RAII for libzip's handles and error records.
struct ZipSourceFree {
    void operator()(zip_source_t* source) const { zip_source_free(source); }
};
struct ZipDiscard {
    void operator()(zip_t* archive) const { zip_discard(archive); }
};
using ZipSource = std::unique_ptr<zip_source_t, ZipSourceFree>;
using ZipArchive = std::unique_ptr<zip_t, ZipDiscard>;

struct ZipError {
    zip_error_t error;
    ZipError() { zip_error_init(&error); }
    ~ZipError() { zip_error_fini(&error); }
    ZipError(const ZipError&) = delete;
    ZipError& operator=(const ZipError&) = delete;
};

// The archive is built in memory, so libzip only fails when memory runs out (or on a bug).
[[noreturn]] void throw_zip_error(const fs::path& path, zip_error_t* error) {
    throw InternalError("cannot build the archive for " + quoted(path) + " in memory: " + zip_error_strerror(error));
}

// Bytes outside printable ASCII as \xNN, so that a message stays one readable line.
std::string escape_bytes(const std::string& text) {
    std::string out;
    for (const char c : text) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte >= 0x20 && byte < 0x7f) {
            out += c;
        } else {
            static const char digits[] = "0123456789ABCDEF";
            out += {'\\', 'x', digits[byte >> 4], digits[byte & 15]};
        }
    }
    return out;
}

// Builds the .npz in memory; returns the buffer source that holds the archive's bytes.
ZipSource build_archive(const fs::path& path, const std::vector<std::pair<std::string, Array>>& members) {
    ZipError error;
    ZipSource buffer(zip_source_buffer_create(nullptr, 0, 0, &error.error));
    if (!buffer) throw_zip_error(path, &error.error);
    ZipArchive archive(zip_open_from_source(buffer.get(), ZIP_TRUNCATE, &error.error));
    if (!archive) throw_zip_error(path, &error.error);
    zip_source_keep(buffer.get());  // the archive owns one reference, `buffer` another
    // Each member is two fragments, its header and the caller's bytes, which libzip reads
    // (never writes: no free flag) at zip_close(); no copy of the data is made before that.
    std::vector<std::string> headers;
    headers.reserve(members.size());
    for (const auto& [key, array] : members) {
        headers.push_back(header(array.dtype, array.shape));
        const zip_buffer_fragment_t fragments[2] = {
            {reinterpret_cast<zip_uint8_t*>(headers.back().data()), headers.back().size()},
            {const_cast<zip_uint8_t*>(array.bytes.data()), array.bytes.size()}};
        zip_source_t* source = zip_source_buffer_fragment(archive.get(), fragments, array.bytes.empty() ? 1 : 2, 0);
        if (source == nullptr) throw_zip_error(path, zip_get_error(archive.get()));
        const zip_int64_t index = zip_file_add(archive.get(), (key + ".npy").c_str(), source, ZIP_FL_ENC_UTF_8);
        if (index < 0) {
            zip_source_free(source);
            if (zip_error_code_zip(zip_get_error(archive.get())) == ZIP_ER_INVAL) {
                // The name came from the store (a template group's name): libzip takes
                // only UTF-8 names when told they are UTF-8, as .npz readers expect them.
                throw FormatError("cannot write " + quoted(path) + ": member name '" + escape_bytes(key) +
                                  ".npy' is not valid UTF-8: rename that template group in the store "
                                  "(h5py: f.move), or fetch the others with --template");
            }
            throw_zip_error(path, zip_get_error(archive.get()));
        }
        if (zip_set_file_compression(archive.get(), static_cast<zip_uint64_t>(index), ZIP_CM_STORE, 0) != 0) {
            throw_zip_error(path, zip_get_error(archive.get()));
        }
    }
    if (zip_close(archive.get()) != 0) throw_zip_error(path, zip_get_error(archive.get()));
    archive.release();  // zip_close freed it
    return buffer;
}

}  // namespace

// ---- OutputFile ---------------------------------------------------------------------------


void check_output_path(const std::filesystem::path& path, FileFormat format) { resolve(path, format); }

namespace {
bool is_standard_output(const std::filesystem::path& path) {
    Destination destination;
    try {
        destination = resolve(path, FileFormat::npz);
    } catch (const Error&) {
        return false;  // not a writable --out at all: OutputFile says why
    }
    struct stat out {}, target {};
    if (::fstat(STDOUT_FILENO, &out) != 0) return false;
    const auto same_as_stdout = [&](const struct stat& st) { return st.st_dev == out.st_dev && st.st_ino == out.st_ino; };
    switch (destination.kind) {
        case Destination::Kind::own_descriptor:  // /dev/stdout, /proc/self/fd/1: written through fd 1
            return destination.descriptor == STDOUT_FILENO ||
                   (::fstat(destination.descriptor, &target) == 0 && same_as_stdout(target));
        case Destination::Kind::stream:  // the pipe stdout is (a FIFO by name); not /dev/null
            return ::stat(destination.target.c_str(), &target) == 0 && same_as_stdout(target) &&
                   (S_ISFIFO(target.st_mode) || S_ISSOCK(target.st_mode));
        case Destination::Kind::replace: break;  // a new file renamed into place: never mixed
    }
    return false;
}
}  // namespace

bool takes_stdout(const std::filesystem::path& path, bool json) {
    if (!is_standard_output(path)) return false;
    if (json)
        throw UsageError("--out " + quoted(path) + " is standard output, where --json prints too: give --out a "
                         "file, or drop --json");
    return true;
}

OutputFile::OutputFile(const std::filesystem::path& path, FileFormat format) : path_(path) {
    const auto destination = resolve(path, format);
    target_ = destination.target;
    switch (destination.kind) {
        case Destination::Kind::own_descriptor:
            fd_ = ::fcntl(destination.descriptor, F_DUPFD_CLOEXEC, 0);
            if (fd_ < 0) throw_write_error(path_, errno);
            return;
        case Destination::Kind::stream:
            // A device or FIFO: written in place (a FIFO waits here for its reader, as `>` does).
            fd_ = ::open(target_.c_str(), O_WRONLY | O_NOCTTY | O_CLOEXEC);
            if (fd_ < 0) throw_write_error(path_, errno);
            return;
        case Destination::Kind::replace: break;
    }
    // What a writer killed by Ctrl-C or SIGKILL left (its destructor never ran): it can be
    // gigabytes of tokens.
    remove_stale_temporaries(target_, ".partial-");
    // O_EXCL: never write into a file someone else created under the temporary name.
    for (int attempt = 0; fd_ < 0; ++attempt) {
        temporary_ = target_;
        temporary_ += ".partial-" + std::to_string(::getpid()) + (attempt ? "-" + std::to_string(attempt) : "");
        fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);  // umask applies
        if (fd_ < 0 && (errno != EEXIST || attempt == 100)) {
            const int error = errno;
            temporary_.clear();
            throw_directory_error(path_, directory_of(target_), error);
        }
    }
    if (destination.existing) {
        // Replacing must not change who may read the file. Only root may give the owner
        // back, so that failing is expected and silent; chown goes first as it clears
        // set-id bits. A file system without permissions (vfat) refuses chmod: the file is
        // still written, with a new file's mode.
        [[maybe_unused]] const int owner_kept = ::fchown(fd_, destination.existing->st_uid, destination.existing->st_gid);
        if (::fchmod(fd_, destination.existing->st_mode & 07777) != 0) {
            spdlog::warn("cannot keep the permissions of {} ({}): it gets a new file's", quoted(path_),
                         errno_text(errno));
        }
    }
}

OutputFile::~OutputFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_ && !temporary_.empty()) ::unlink(temporary_.c_str());
}

void OutputFile::write(const void* data, std::size_t bytes) {
    const auto* next = static_cast<const char*>(data);
    while (bytes > 0) {
        const ssize_t written = ::write(fd_, next, std::min<std::size_t>(bytes, std::size_t{1} << 30));
        if (written < 0) {
            if (errno == EINTR) continue;
            throw_write_error(path_, errno);
        }
        next += written;
        bytes -= static_cast<std::size_t>(written);
    }
}

void OutputFile::commit() {
    if (committed_) return;
    // close() is where NFS and some FUSE file systems report a full disk.
    if (::close(std::exchange(fd_, -1)) != 0 && errno != EINTR) throw_write_error(path_, errno);
    if (!temporary_.empty() && ::rename(temporary_.c_str(), target_.c_str()) != 0) {
        throw_directory_error(path_, directory_of(target_), errno);
    }
    committed_ = true;
}

// ---- .npy / .npz --------------------------------------------------------------------------

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
    std::set<std::string> keys;
    for (const auto& [key, array] : members) {
        if (!keys.insert(key).second) throw InternalError("npz: duplicate member '" + key + "'");
        if (array.bytes.size() != element_count(array.shape) * dtype_size(array.dtype)) {
            throw InternalError("npz: member '" + key + "' has " + std::to_string(array.bytes.size()) +
                                " bytes, not what its shape says");
        }
    }
    OutputFile out(path, FileFormat::npz);
    if (members.empty()) {
        // libzip writes nothing for an empty archive; numpy expects a valid (empty) zip.
        static const unsigned char empty_zip[22] = {0x50, 0x4b, 0x05, 0x06};
        out.write(empty_zip, sizeof empty_zip);
        out.commit();
        return;
    }
    const ZipSource archive = build_archive(path, members);
    if (zip_source_open(archive.get()) != 0) throw_zip_error(path, zip_source_error(archive.get()));
    std::vector<char> chunk(std::size_t{1} << 20);
    for (;;) {
        const zip_int64_t read = zip_source_read(archive.get(), chunk.data(), chunk.size());
        if (read < 0) throw_zip_error(path, zip_source_error(archive.get()));
        if (read == 0) break;
        out.write(chunk.data(), static_cast<std::size_t>(read));
    }
    zip_source_close(archive.get());
    out.commit();
}

StreamWriter::StreamWriter(const std::filesystem::path& path, DType dtype, std::vector<std::int64_t> shape)
    : out_(path, FileFormat::npy), expected_(element_count(shape) * dtype_size(dtype)) {
    const auto head = header(dtype, shape);
    out_.write(head.data(), head.size());
}

void StreamWriter::append(const void* data, std::size_t bytes) {
    if (written_ + bytes > expected_) throw InternalError("npy: more data than the announced shape holds");
    out_.write(data, bytes);
    written_ += bytes;
}

void StreamWriter::finish() {
    if (written_ != expected_) throw InternalError("npy: fewer elements written than the announced shape holds");
    out_.commit();
}

}  // namespace fstore::npy
