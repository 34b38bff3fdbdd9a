// Graceful interruption: Ctrl-C (SIGINT), SIGTERM and SIGHUP (the terminal closed; left
// alone when ignored, as under nohup) become a flag that long-running work polls between
// units of work (the build pipeline checks it between batches), instead of killing the
// process in the middle of a write.
//
// How: a minimal handler writes the signal number into a self-pipe, and a watcher thread
// reads it and sets the flag (and prints nothing: the caller decides what to say). Blocking
// the signals and sigwait()ing would need every thread to block them, but libraries start
// threads before main (OpenBLAS does, when it is loaded), so a handler is the reliable way.
// Interrupted system calls are restarted (SA_RESTART).
//
//   SignalWatcher watcher;                      // first thing in main
//   run_build(options, &watcher.stop_flag(), progress);
//   if (watcher.stop_requested()) ...           // exit 130, tell how to resume
//
// A second SIGINT or SIGTERM while the first is being honoured ends the process at once with
// exit status 128 + signal: the user asked twice. A SIGHUP then is ignored (logging out sends
// SIGTERM, then SIGHUP). Writers stay consistent anyway (the store's
// rollback journal restores the last commit on the next open).
//
// The flag lives in the watcher object. The handler needs one process-wide atomic (the pipe
// it writes to), so only one watcher may be alive at a time: a second one throws
// InternalError. The destructor restores the previous dispositions.
#pragma once

#include <atomic>
#include <memory>

namespace fstore {

class SignalWatcher {
public:
    SignalWatcher();
    ~SignalWatcher();  // restores the previous handlers and stops the watcher thread

    SignalWatcher(const SignalWatcher&) = delete;
    SignalWatcher& operator=(const SignalWatcher&) = delete;

    // True once SIGINT, SIGTERM or SIGHUP arrived.
    bool stop_requested() const noexcept { return stop_.load(std::memory_order_acquire); }

    // The signal that set the flag (SIGINT/SIGTERM/SIGHUP), 0 when none arrived yet.
    int signal_number() const noexcept { return signal_.load(std::memory_order_acquire); }

    // The flag itself, for code that only needs to poll it (run_build takes a pointer).
    const std::atomic<bool>& stop_flag() const noexcept { return stop_; }

    class Impl;

private:
    std::atomic<bool> stop_{false};
    std::atomic<int> signal_{0};
    std::unique_ptr<Impl> impl_;
};

}  // namespace fstore
