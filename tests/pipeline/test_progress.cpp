#include <chrono>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>

#include "fstore/progress.hpp"

namespace {

using Clock = fstore::Progress::Clock;

// A stream whose content the test can read back.
struct Capture {
    std::FILE* file = std::tmpfile();
    ~Capture() { std::fclose(file); }
    std::string text() const {
        std::fflush(file);
        std::rewind(file);
        std::string out;
        char buffer[4096];
        std::size_t n;
        while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) out.append(buffer, n);
        return out;
    }
};

struct FakeClock {
    Clock::time_point t{};
    std::function<Clock::time_point()> fn() {
        return [this] { return t; };
    }
    void advance(double seconds) {
        t += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    }
};

// Log-style progress on a fake clock, reporting into a capture.
struct LoggedProgress {
    Capture out;
    FakeClock clock;
    fstore::Progress progress;
    explicit LoggedProgress(std::chrono::seconds interval = std::chrono::seconds(10))
        : progress(log_options(interval), out.file, clock.fn()) {}
    static fstore::ProgressOptions log_options(std::chrono::seconds interval) {
        fstore::ProgressOptions options;
        options.style = fstore::ProgressStyle::log;
        options.log_interval = interval;
        return options;
    }
};

int count(const std::string& s, const std::string& what) {
    int n = 0;
    for (auto pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + 1)) ++n;
    return n;
}

}  // namespace

TEST(Progress, FormatsDurations) {
    EXPECT_EQ(fstore::format_duration(0), "00:00");
    EXPECT_EQ(fstore::format_duration(37.4), "00:37");
    EXPECT_EQ(fstore::format_duration(125), "02:05");
    EXPECT_EQ(fstore::format_duration(3723), "01:02:03");
    EXPECT_EQ(fstore::format_duration(-1), "--:--");
}

TEST(Progress, BarLineShowsCountsRateAndEta) {
    fstore::ProgressSnapshot s;
    s.phase = "train";
    s.done = 50;
    s.total = 200;
    s.rate = 25.0;
    s.eta_seconds = 6.0;
    const auto line = fstore::format_bar_line(s, 10);
    EXPECT_NE(line.find("train"), std::string::npos);
    EXPECT_NE(line.find("[##........]"), std::string::npos) << line;
    EXPECT_NE(line.find("50/200"), std::string::npos);
    EXPECT_NE(line.find("25%"), std::string::npos);
    EXPECT_NE(line.find("25.0 img/s"), std::string::npos);
    EXPECT_NE(line.find("ETA 00:06"), std::string::npos);
}

TEST(Progress, LogStyleWritesPeriodicLinesWithRateOfThisRunOnly) {
    Capture out;
    FakeClock clock;
    fstore::ProgressOptions options;
    options.style = fstore::ProgressStyle::log;
    options.log_interval = std::chrono::seconds(10);
    fstore::Progress progress(options, out.file, clock.fn());
    EXPECT_EQ(progress.style(), fstore::ProgressStyle::log);

    progress.begin("val", 1000, 400);  // 400 resumed from disk
    clock.advance(5);
    progress.advance(50);  // before the interval: no line
    EXPECT_EQ(out.text(), "");
    clock.advance(5);
    progress.advance(50);  // 100 new in 10 s = 10 img/s; 500 left -> 50 s
    EXPECT_EQ(out.text(), "val: 500/1000 (50%), 10.0 img/s, ETA 00:50\n");
    progress.end();
    const auto text = out.text();
    EXPECT_EQ(count(text, "\n"), 2) << text;
    EXPECT_EQ(text.find('\r'), std::string::npos);  // never a bar on a non-terminal
}

TEST(Progress, CountStopsAtTheTotal) {
    Capture out;
    FakeClock clock;
    fstore::ProgressOptions options;
    options.style = fstore::ProgressStyle::log;
    fstore::Progress progress(options, out.file, clock.fn());
    progress.begin("train", 10);
    progress.advance(7);
    progress.advance(5);  // 12 entries read for 10 rows wanted (2 were unreadable)
    EXPECT_EQ(progress.snapshot().done, 10);
    progress.begin("test", 0);  // unknown total: no cap
    progress.advance(12);
    EXPECT_EQ(progress.snapshot().done, 12);
    // end(all_done): the unreadable tail was never counted, but the split is finished.
    progress.begin("val", 10);
    progress.advance(8);
    progress.end(true);
    const auto text = out.text();
    EXPECT_NE(text.find("val: 10/10 (100%)"), std::string::npos) << text;
}

TEST(Progress, NoneStylePrintsNothing) {
    Capture out;
    FakeClock clock;
    fstore::ProgressOptions options;
    options.style = fstore::ProgressStyle::none;
    {
        fstore::Progress progress(options, out.file, clock.fn());
        progress.begin("train", 10);
        clock.advance(100);
        progress.advance(10);
        progress.message("skipped x.png: unreadable");
        progress.end();
    }
    EXPECT_EQ(out.text(), "");
}

TEST(Progress, AutomaticIsLogOnAFile) {
    Capture out;
    fstore::Progress progress({}, out.file);
    EXPECT_EQ(progress.style(), fstore::ProgressStyle::log);
}

TEST(Progress, BarRedrawsInPlaceAndEndsWithNewline) {
    Capture out;
    FakeClock clock;
    fstore::ProgressOptions options;
    options.style = fstore::ProgressStyle::bar;
    fstore::Progress progress(options, out.file, clock.fn());
    progress.begin("test", 4);
    for (int i = 0; i < 4; ++i) {
        clock.advance(1);
        progress.advance(1);
    }
    progress.message("note");
    progress.end();
    const auto text = out.text();
    EXPECT_GE(count(text, "\r"), 5) << text;
    EXPECT_NE(text.find("note\n"), std::string::npos);
    EXPECT_NE(text.find("4/4"), std::string::npos);
    EXPECT_NE(text.find("1.0 img/s"), std::string::npos);
    EXPECT_EQ(text.back(), '\n');
}

// A phase shown once its first item is done (the build's writer begins a split's bar with
// its first batch written) counts its rate from when its work began.
TEST(Progress, RateCountsFromWhenThePhaseBegan) {
    LoggedProgress logged(std::chrono::seconds(1));
    auto& [out, clock, progress] = logged;
    const auto began = clock.t;
    clock.advance(10);  // the first batch of 10 took 10 s
    progress.begin("train", 100, 0, "img", began);
    progress.advance(10);
    EXPECT_DOUBLE_EQ(progress.snapshot().rate, 1.0);
    EXPECT_DOUBLE_EQ(progress.snapshot().eta_seconds, 90.0);
    // Without `since` the phase starts now.
    progress.begin("val", 100);
    clock.advance(5);
    progress.advance(10);
    EXPECT_DOUBLE_EQ(progress.snapshot().rate, 2.0);
}

// Items found done (templates kept from an earlier run) count as done, not in the rate.
TEST(Progress, SkippedItemsAreDoneButNotInTheRate) {
    LoggedProgress logged;
    auto& [out, clock, progress] = logged;
    progress.begin("text", 10, 0, "tpl");
    progress.skip(6);
    clock.advance(2);
    progress.advance(2);
    const auto s = progress.snapshot();
    EXPECT_EQ(s.done, 8);
    EXPECT_DOUBLE_EQ(s.rate, 1.0);  // 2 encoded in 2 s; the 6 kept took no time
    EXPECT_DOUBLE_EQ(s.eta_seconds, 2.0);
    progress.skip(5);  // capped at the total like advance
    EXPECT_EQ(progress.snapshot().done, 10);
}

// A kept template that arrives after the log interval reports at once: that line's rate
// must already leave it out: 3 encoded in 32 s, so 6 left take 64 s (counting it: 48 s).
TEST(Progress, ReportOnASkipLeavesTheSkippedOut) {
    LoggedProgress logged(std::chrono::seconds(30));
    auto& [out, clock, progress] = logged;
    progress.begin("text", 10, 0, "tpl");
    clock.advance(12);
    progress.advance(3);  // before the interval: no line
    clock.advance(20);
    progress.skip(1);  // 32 s since begin: reports now
    EXPECT_EQ(out.text(), "text: 4/10 (40%), 0.1 tpl/s, ETA 01:04\n");
}
