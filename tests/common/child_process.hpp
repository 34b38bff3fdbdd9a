// Runs library code in a forked child, for failures a test cannot cause in its own process:
// a "full disk" through a file-size limit (no root, no small file system needed), another
// user's permissions, an ignored SIGPIPE. Shared by the store and access tests.
#pragma once

#include <grp.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>

#include "fstore/error.hpp"

namespace fstore::test {

struct ChildOutcome {
    int exit_code = -1;   // 0, the code of the fstore::Error `body` threw, 70 for another
                          // exception; -1 when the child died of a signal, -2 when fork failed
    std::string message;  // what() of the exception `body` threw
};

// Runs `body` in a forked child and reports how it ended.
inline ChildOutcome run_in_child(const std::function<void()>& body) {
    int message_pipe[2];
    if (::pipe(message_pipe) != 0) return {-2, std::strerror(errno)};
    const pid_t child = ::fork();
    if (child < 0) {
        ::close(message_pipe[0]);
        ::close(message_pipe[1]);
        return {-2, std::strerror(errno)};
    }
    if (child == 0) {
        ::close(message_pipe[0]);
        int code = 0;
        std::string message;
        try {
            body();
        } catch (const fstore::Error& e) {
            code = static_cast<int>(e.exit_code());
            message = e.what();
        } catch (const std::exception& e) {
            code = static_cast<int>(fstore::ExitCode::internal);
            message = e.what();
        } catch (...) {  // never let an exception unwind into the test runner's copy in the child
            code = static_cast<int>(fstore::ExitCode::internal);
            message = "non-standard exception";
        }
        if (::write(message_pipe[1], message.data(), message.size()) < 0) code = 99;
        ::_exit(code);
    }
    ::close(message_pipe[1]);
    ChildOutcome outcome;
    char buffer[512];
    for (ssize_t n; (n = ::read(message_pipe[0], buffer, sizeof buffer)) != 0;) {
        if (n > 0) outcome.message.append(buffer, static_cast<std::size_t>(n));
        else if (errno != EINTR) break;
    }
    ::close(message_pipe[0]);
    int status = 0;
    if (::waitpid(child, &status, 0) == child && WIFEXITED(status)) outcome.exit_code = WEXITSTATUS(status);
    return outcome;
}

// Runs `body` in a forked child whose files may not grow past `limit` bytes, as on a full
// disk (write(2) fails with EFBIG instead of the process being killed by SIGXFSZ).
inline ChildOutcome run_under_file_limit(std::uintmax_t limit, const std::function<void()>& body) {
    return run_in_child([&] {
        ::signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl {};
        rl.rlim_cur = rl.rlim_max = static_cast<rlim_t>(limit);
        if (::setrlimit(RLIMIT_FSIZE, &rl) != 0) throw std::runtime_error("setrlimit(RLIMIT_FSIZE) failed");
        body();
    });
}

// Runs `body` in a forked child that file permissions apply to: as user and group nobody
// when the tests run as root (root bypasses permissions), as itself otherwise.
inline ChildOutcome run_unprivileged(const std::function<void()>& body) {
    return run_in_child([&] {
        constexpr uid_t nobody = 65534;
        if (::geteuid() == 0 && (::setgroups(0, nullptr) != 0 || ::setgid(nobody) != 0 || ::setuid(nobody) != 0))
            throw std::runtime_error("cannot drop root privileges to user nobody");
        body();
    });
}

// The exit code of run_under_file_limit: 0, or the code of the fstore::Error `change` threw.
inline int exit_code_under_file_limit(std::uintmax_t limit, const std::function<void()>& change) {
    return run_under_file_limit(limit, change).exit_code;
}

}  // namespace fstore::test
