// Small file-system helpers the store modules share: a file descriptor that closes itself,
// a pread that reads all it is asked for, where a file's directory is, and cleaning up the
// temporary files (`<name>.partial-PID`, `<name>.creating-PID`) that a writer killed before
// its destructors ran leaves beside its target.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>

#include <unistd.h>

namespace fstore {

// A POSIX file descriptor, closed exactly once (move-only); -1 holds none.
class Descriptor {
public:
    Descriptor() = default;
    explicit Descriptor(int fd) : fd_(fd) {}
    Descriptor(const Descriptor&) = delete;
    Descriptor& operator=(const Descriptor&) = delete;
    Descriptor(Descriptor&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    Descriptor& operator=(Descriptor&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    ~Descriptor() { reset(); }
    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

// pread(2) until `size` bytes are read or the file ends, over short reads and EINTR: the
// bytes read (fewer at the end of the file), or -1 with errno set when a read fails.
std::int64_t pread_full(int fd, void* buffer, std::size_t size, std::uint64_t offset) noexcept;

// The directory holding `file`: its parent, or "." for a bare name.
std::filesystem::path directory_of(const std::filesystem::path& file);

// Removes the files beside `target` named `<target's name><infix><PID>` or
// `<target's name><infix><PID>-<N>` whose process PID no longer exists. A file of a live
// process, of this one, or of a PID reused since is left alone, as is anything else in the
// directory. Errors are ignored: the cleanup is a courtesy, never a reason to fail.
void remove_stale_temporaries(const std::filesystem::path& target, const std::string& infix);

}  // namespace fstore
