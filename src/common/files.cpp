#include "fstore/files.hpp"

#include <algorithm>
#include <cerrno>
#include <system_error>

#include <signal.h>
#include <unistd.h>

namespace fstore {

namespace fs = std::filesystem;

std::int64_t pread_full(int fd, void* buffer, std::size_t size, std::uint64_t offset) noexcept {
    auto* p = static_cast<unsigned char*>(buffer);
    std::size_t done = 0;
    while (done < size) {
        const std::size_t n = std::min<std::size_t>(size - done, 1u << 30);
        const ssize_t got = ::pread(fd, p + done, n, static_cast<off_t>(offset + done));
        if (got < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (got == 0) break;
        done += static_cast<std::size_t>(got);
    }
    return static_cast<std::int64_t>(done);
}

fs::path directory_of(const fs::path& file) { return file.has_parent_path() ? file.parent_path() : fs::path("."); }

void remove_stale_temporaries(const fs::path& target, const std::string& infix) {
    const std::string prefix = target.filename().string() + infix;
    std::error_code ec;
    for (fs::directory_iterator it(directory_of(target), ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.compare(0, prefix.size(), prefix) != 0) continue;
        const std::string rest = name.substr(prefix.size());
        const std::string digits = rest.substr(0, rest.find('-'));
        const auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
        if (digits.empty() || digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), is_digit)) continue;
        const std::string counter = rest.size() > digits.size() ? rest.substr(digits.size() + 1) : "";
        if (rest.size() > digits.size() && (counter.empty() || !std::all_of(counter.begin(), counter.end(), is_digit)))
            continue;
        const pid_t pid = static_cast<pid_t>(std::stol(digits));
        if (pid > 0 && pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH) {
            std::error_code ignored;
            fs::remove(it->path(), ignored);
        }
    }
}

}  // namespace fstore
