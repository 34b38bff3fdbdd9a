// Progress reporting for long runs (the build's text and image stages).
//
// Three styles, chosen once:
//   bar   a one-line bar redrawn in place on a terminal: phase, done/total, percent,
//         rate in items/s and ETA, e.g.
//         "train  [#########.........]  4096/11959  34%  212.4 img/s  ETA 00:37"
//   log   for pipes and log files: one plain line every `log_interval` (and one at the end
//         of each phase), e.g. "train: 4096/11959 (34%), 212.4 img/s, ETA 00:37"
//   none  prints nothing (--no-progress)
// `ProgressStyle::automatic` picks bar when the stream is a terminal, log otherwise.
//
// A phase is one unit the user recognises (the text stage, one split). Items skipped because
// they were already on disk (resume) count as done but not in the rate: the rate and ETA
// describe this run's speed. Drawing is throttled, so `advance` is cheap to call per batch.
//
// Not thread-safe: call it from one thread (the pipeline calls it from its writer side).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>

namespace fstore {

enum class ProgressStyle { automatic, bar, log, none };

struct ProgressOptions {
    ProgressStyle style = ProgressStyle::automatic;
    std::chrono::milliseconds log_interval{10'000};  // between two log lines
    std::chrono::milliseconds redraw_interval{100};  // between two bar redraws
    int bar_width = 30;                              // characters inside the brackets
};

// What one report shows; also the input of the pure formatting functions below.
struct ProgressSnapshot {
    std::string phase;          // "text", "train", "val", ...
    std::string unit = "img";   // rate unit: "img" -> "img/s"
    std::int64_t done = 0;      // items done, resumed ones included
    std::int64_t total = 0;     // items in the phase; <= 0 when unknown
    double rate = 0.0;          // items per second in this run; 0 when unknown
    double eta_seconds = -1.0;  // < 0 when unknown
};

// "01:02:03" / "02:03"; "--:--" for an unknown (negative or non-finite) duration.
std::string format_duration(double seconds);
// The bar line (without carriage return) and the log line for a snapshot.
std::string format_bar_line(const ProgressSnapshot& snapshot, int bar_width);
std::string format_log_line(const ProgressSnapshot& snapshot);

class Progress {
public:
    using Clock = std::chrono::steady_clock;

    // `out` is where reports go (stderr in the tools). `now` lets tests drive time.
    explicit Progress(ProgressOptions options = {}, std::FILE* out = stderr,
                      std::function<Clock::time_point()> now = &Clock::now);
    ~Progress();  // ends an open phase's bar line

    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;

    // The style actually used (automatic resolved).
    ProgressStyle style() const noexcept { return style_; }

    // Starts a phase of `total` items of which `already_done` were done by an earlier run.
    // Ends the previous phase if one is open. `since`: when the phase's work began, if
    // before this call (a pipeline that shows a phase once its first item is done); the
    // rate and ETA count from there. Default: now.
    void begin(const std::string& phase, std::int64_t total, std::int64_t already_done = 0,
               const std::string& unit = "img", std::optional<Clock::time_point> since = std::nullopt);
    // `items` more are done (the count stops at the phase's total when it has one); reports
    // when the throttle interval has passed.
    void advance(std::int64_t items);
    // `items` more were found done by an earlier run (kept, not redone): counted as done,
    // left out of the rate like begin's `already_done`.
    void skip(std::int64_t items);
    // Ends the phase with a final report (a finished bar / a last log line). all_done: the
    // phase's work is finished whatever the count says (the items after the last counted
    // one were skipped, e.g. unreadable images at the end of a split): it shows its total.
    void end(bool all_done = false);

    // A one-off message that must not be garbled by the bar (e.g. a skipped image).
    void message(const std::string& line);

    ProgressSnapshot snapshot() const;

private:
    std::int64_t count(std::int64_t items);  // adds to done (capped); returns what it added
    void report_if_due();
    void report(bool final_report);

    ProgressOptions options_;
    std::FILE* out_;
    std::function<Clock::time_point()> now_;
    ProgressStyle style_;

    bool open_ = false;
    ProgressSnapshot current_;
    std::int64_t resumed_ = 0;  // items counted as done before this run
    Clock::time_point started_{};
    Clock::time_point last_report_{};
    std::size_t last_bar_length_ = 0;
};

}  // namespace fstore
