// fstore's one exception hierarchy.
//
// Every failure the library can foresee is thrown as a subclass of fstore::Error. Each
// class maps to one documented process exit code, so `main` catches `fstore::Error`
// once, prints `what()` as a single line and returns `exit_code()`. Messages name the
// problem and, where there is one, the fix: "store 'x.h5' is being written by another
// process; wait for it to finish".
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>

namespace fstore {

// Process exit codes, documented in README.md ("Exit codes"). Stable: scripts rely on them.
enum class ExitCode : int {
    ok = 0,
    findings = 1,       // `verify` found problems (not an error of the tool)
    usage = 2,          // bad arguments: unknown option/template/split, index out of range
    not_found = 3,      // a named file or directory (a model archive too) does not exist / is not readable
    bad_format = 4,     // not HDF5, not an fstore, truncated store, corrupt npz or bad .npy dtype, bad JSON/CSV
    locked = 5,         // the store is being written by another process
    model = 6,          // model archive invalid, or unusable on this device (missing: not_found)
    data = 7,           // dataset content (count mismatch, missing split, image size, unreadable image)
    mismatch = 8,       // resuming with a different model/dataset/prompts than the store's
    network = 9,        // download failed or checksum mismatch
    io = 10,            // the file system failed a write/read (disk full, quota, EIO, read-only, not writable)
    internal = 70,      // a bug or an unexpected library failure (EX_SOFTWARE)
    interrupted = 130,  // SIGINT/SIGTERM/SIGHUP: stopped cleanly after the current batch
};

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message, ExitCode code = ExitCode::internal)
        : std::runtime_error(message), code_(code) {}
    ExitCode exit_code() const noexcept { return code_; }

private:
    ExitCode code_;
};

#define FSTORE_DEFINE_ERROR(Name, Code)                                                    \
    class Name : public Error {                                                            \
    public:                                                                                \
        explicit Name(const std::string& message) : Error(message, ExitCode::Code) {}      \
    }

FSTORE_DEFINE_ERROR(UsageError, usage);
FSTORE_DEFINE_ERROR(NotFoundError, not_found);
FSTORE_DEFINE_ERROR(FormatError, bad_format);
FSTORE_DEFINE_ERROR(LockedError, locked);
FSTORE_DEFINE_ERROR(ModelError, model);
FSTORE_DEFINE_ERROR(DataError, data);
FSTORE_DEFINE_ERROR(MismatchError, mismatch);
FSTORE_DEFINE_ERROR(NetworkError, network);
FSTORE_DEFINE_ERROR(IoError, io);
FSTORE_DEFINE_ERROR(InterruptedError, interrupted);
FSTORE_DEFINE_ERROR(InternalError, internal);

#undef FSTORE_DEFINE_ERROR

// A path as messages name it: 'dir/x.h5'.
inline std::string quoted(const std::filesystem::path& path) { return "'" + path.string() + "'"; }

}  // namespace fstore
