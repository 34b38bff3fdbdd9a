#include "fstore/signals.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "fstore/error.hpp"

namespace fstore {
namespace {

// The write end of the active watcher's self-pipe, -1 when none. A signal handler can reach
// nothing but static storage, so this one atomic is the unavoidable process-wide state (the
// signal disposition it serves is process-wide too). Lock-free int: async-signal-safe.
std::atomic<int> signal_pipe_fd{-1};
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs a lock-free atomic");

extern "C" void forward_signal(int sig) {
    const int saved_errno = errno;
    const int fd = signal_pipe_fd.load(std::memory_order_relaxed);
    if (fd >= 0) {
        const auto byte = static_cast<unsigned char>(sig);
        [[maybe_unused]] const auto n = ::write(fd, &byte, 1);
    }
    errno = saved_errno;
}

}  // namespace

class SignalWatcher::Impl {
public:
    int pipe_fds[2] = {-1, -1};
    struct sigaction previous_int {};
    struct sigaction previous_term {};
    struct sigaction previous_hup {};
    bool hup_handled = false;
    std::thread thread;
};

SignalWatcher::SignalWatcher() : impl_(std::make_unique<Impl>()) {
    // A handler + self-pipe rather than blocking the signals and sigwait(): libraries start
    // threads before main (OpenBLAS does, at load time) and those would not block them.
    if (::pipe2(impl_->pipe_fds, O_CLOEXEC) != 0) {
        throw InternalError(std::string("cannot create the signal pipe: ") + std::strerror(errno));
    }
    int expected = -1;
    if (!signal_pipe_fd.compare_exchange_strong(expected, impl_->pipe_fds[1])) {
        ::close(impl_->pipe_fds[0]);
        ::close(impl_->pipe_fds[1]);
        throw InternalError("a SignalWatcher is already active: create one, in main");
    }
    struct sigaction action {};
    action.sa_handler = &forward_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;  // interrupted system calls resume; the pipeline polls the flag
    sigaction(SIGINT, &action, &impl_->previous_int);
    sigaction(SIGTERM, &action, &impl_->previous_term);
    // A closed terminal (SIGHUP) stops like Ctrl-C, unless the job asked to outlive its
    // terminal (nohup ignores SIGHUP): an ignored SIGHUP stays ignored.
    sigaction(SIGHUP, nullptr, &impl_->previous_hup);
    if (impl_->previous_hup.sa_handler != SIG_IGN) {
        sigaction(SIGHUP, &action, nullptr);
        impl_->hup_handled = true;
    }

    impl_->thread = std::thread([this] {
        for (;;) {
            unsigned char byte = 0;
            const auto n = ::read(impl_->pipe_fds[0], &byte, 1);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0 || byte == 0) return;  // closed, or the destructor's wake-up byte
            const int sig = byte;
            // SIGHUP after a stop was asked is no second request: logging out sends SIGTERM,
            // then SIGHUP, and the terminal closing may follow a Ctrl-C.
            if (sig == SIGHUP && stop_.load(std::memory_order_acquire)) continue;
            if (stop_.load(std::memory_order_acquire)) {
                // Asked twice: stop now. The store's journal rolls back to the last commit.
                std::fprintf(stderr, "\nfstore: interrupted again, stopping immediately (the store "
                                     "keeps its last committed batch; rerun the command to resume)\n");
                std::fflush(stderr);
                std::_Exit(128 + sig);
            }
            signal_.store(sig, std::memory_order_release);
            stop_.store(true, std::memory_order_release);
        }
    });
}

SignalWatcher::~SignalWatcher() {
    sigaction(SIGINT, &impl_->previous_int, nullptr);
    sigaction(SIGTERM, &impl_->previous_term, nullptr);
    if (impl_->hup_handled) sigaction(SIGHUP, &impl_->previous_hup, nullptr);
    signal_pipe_fd.store(-1);
    const unsigned char wake = 0;
    [[maybe_unused]] const auto n = ::write(impl_->pipe_fds[1], &wake, 1);
    impl_->thread.join();
    ::close(impl_->pipe_fds[0]);
    ::close(impl_->pipe_fds[1]);
}

}  // namespace fstore
