#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "fstore/error.hpp"
#include "fstore/signals.hpp"

namespace {

bool wait_for(const fstore::SignalWatcher& watcher, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!watcher.stop_requested() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return watcher.stop_requested();
}

bool default_disposition(int sig) {
    struct sigaction current {};
    sigaction(sig, nullptr, &current);
    return current.sa_handler == SIG_DFL;
}

}  // namespace

TEST(SignalWatcher, SigintSetsTheFlagInsteadOfKilling) {
    fstore::SignalWatcher watcher;
    EXPECT_FALSE(watcher.stop_requested());
    EXPECT_EQ(watcher.signal_number(), 0);
    ASSERT_EQ(kill(getpid(), SIGINT), 0);
    ASSERT_TRUE(wait_for(watcher, std::chrono::seconds(5)));
    EXPECT_EQ(watcher.signal_number(), SIGINT);
    EXPECT_TRUE(watcher.stop_flag().load());
}

TEST(SignalWatcher, SigtermFromAnotherThreadIsCaught) {
    fstore::SignalWatcher watcher;
    // A thread started after the watcher inherits the blocked mask: the signal still lands
    // in the watcher thread, not in this worker.
    std::thread worker([] { kill(getpid(), SIGTERM); });
    worker.join();
    ASSERT_TRUE(wait_for(watcher, std::chrono::seconds(5)));
    EXPECT_EQ(watcher.signal_number(), SIGTERM);
}

TEST(SignalWatcher, CaughtEvenWithThreadsStartedBeforeIt) {
    // Libraries start threads before main (OpenBLAS at load time); a signal the kernel
    // hands to one of them must still reach the flag and not kill the process.
    std::atomic<bool> done{false};
    std::thread early([&] {
        while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
    {
        fstore::SignalWatcher watcher;
        for (int i = 0; i < 20 && !watcher.stop_requested(); ++i) {
            pthread_kill(early.native_handle(), SIGINT);  // delivered to that thread
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        EXPECT_TRUE(wait_for(watcher, std::chrono::seconds(5)));
        EXPECT_EQ(watcher.signal_number(), SIGINT);
    }
    done = true;
    early.join();
}

TEST(SignalWatcher, RestoresTheHandlersAndAllowsOneAtATime) {
    ASSERT_TRUE(default_disposition(SIGINT));
    {
        fstore::SignalWatcher watcher;
        EXPECT_FALSE(default_disposition(SIGINT));
        EXPECT_FALSE(default_disposition(SIGTERM));
        EXPECT_THROW(fstore::SignalWatcher second, fstore::InternalError);
    }
    EXPECT_TRUE(default_disposition(SIGINT));
    EXPECT_TRUE(default_disposition(SIGTERM));
    // A new watcher works after the first is gone.
    fstore::SignalWatcher again;
    ASSERT_EQ(kill(getpid(), SIGINT), 0);
    EXPECT_TRUE(wait_for(again, std::chrono::seconds(5)));
}

TEST(SignalWatcher, SecondSignalEndsTheProcess) {
    EXPECT_EXIT(
        {
            fstore::SignalWatcher watcher;
            kill(getpid(), SIGINT);
            while (!watcher.stop_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
            kill(getpid(), SIGINT);
            std::this_thread::sleep_for(std::chrono::seconds(10));
            std::exit(0);
        },
        ::testing::ExitedWithCode(128 + SIGINT), "interrupted again");
}

TEST(SignalWatcher, SighupStopsLikeCtrlC) {
    ASSERT_TRUE(default_disposition(SIGHUP));
    {
        fstore::SignalWatcher watcher;
        ASSERT_EQ(kill(getpid(), SIGHUP), 0);  // the terminal closed: stop, do not die
        ASSERT_TRUE(wait_for(watcher, std::chrono::seconds(5)));
        EXPECT_EQ(watcher.signal_number(), SIGHUP);
    }
    EXPECT_TRUE(default_disposition(SIGHUP));
}

// nohup ignores SIGHUP so that the job outlives its terminal: it stays ignored.
TEST(SignalWatcher, IgnoredSighupStaysIgnored) {
    struct sigaction ignore {}, previous {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    ASSERT_EQ(sigaction(SIGHUP, &ignore, &previous), 0);
    {
        fstore::SignalWatcher watcher;
        struct sigaction current {};
        sigaction(SIGHUP, nullptr, &current);
        EXPECT_EQ(current.sa_handler, SIG_IGN);
        ASSERT_EQ(kill(getpid(), SIGHUP), 0);
        EXPECT_FALSE(wait_for(watcher, std::chrono::milliseconds(200)));
    }
    struct sigaction current {};
    sigaction(SIGHUP, nullptr, &current);
    EXPECT_EQ(current.sa_handler, SIG_IGN);
    sigaction(SIGHUP, &previous, nullptr);
}

// Logging out sends SIGTERM, then SIGHUP: that is one request to stop, not two.
TEST(SignalWatcher, SighupAfterAStopIsNoSecondRequest) {
    EXPECT_EXIT(
        {
            fstore::SignalWatcher watcher;
            kill(getpid(), SIGTERM);
            while (!watcher.stop_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
            kill(getpid(), SIGHUP);
            std::this_thread::sleep_for(std::chrono::milliseconds(300));
            std::exit(watcher.signal_number() == SIGTERM ? 0 : 3);
        },
        ::testing::ExitedWithCode(0), "");
}
