#include "fstore/progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace fstore {
namespace {

ProgressStyle resolve_style(ProgressStyle style, std::FILE* out) {
    if (style != ProgressStyle::automatic) return style;
    if (out == nullptr) return ProgressStyle::none;
    return isatty(fileno(out)) ? ProgressStyle::bar : ProgressStyle::log;
}

std::string rate_text(const ProgressSnapshot& s) {
    if (!(s.rate > 0.0) || !std::isfinite(s.rate)) return fmt::format("-- {}/s", s.unit);
    return fmt::format("{:.1f} {}/s", s.rate, s.unit);
}

}  // namespace

std::string format_duration(double seconds) {
    if (!(seconds >= 0.0) || !std::isfinite(seconds)) return "--:--";
    const auto total = static_cast<long long>(std::llround(seconds));
    const long long h = total / 3600, m = (total / 60) % 60, s = total % 60;
    if (h > 0) return fmt::format("{:02}:{:02}:{:02}", h, m, s);
    return fmt::format("{:02}:{:02}", m, s);
}

std::string format_bar_line(const ProgressSnapshot& s, int bar_width) {
    if (s.total <= 0) {
        return fmt::format("{}  {} {}  {}", s.phase, s.done, s.unit, rate_text(s));
    }
    const double fraction = std::clamp(static_cast<double>(s.done) / static_cast<double>(s.total), 0.0, 1.0);
    const int width = std::max(bar_width, 1);
    const int filled = static_cast<int>(fraction * width);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.append(static_cast<std::size_t>(width - filled), '.');
    return fmt::format("{}  [{}]  {}/{}  {:3.0f}%  {}  ETA {}", s.phase, bar, s.done, s.total,
                       fraction * 100.0, rate_text(s), format_duration(s.eta_seconds));
}

std::string format_log_line(const ProgressSnapshot& s) {
    if (s.total <= 0) return fmt::format("{}: {} {}, {}", s.phase, s.done, s.unit, rate_text(s));
    const double percent = 100.0 * static_cast<double>(s.done) / static_cast<double>(s.total);
    return fmt::format("{}: {}/{} ({:.0f}%), {}, ETA {}", s.phase, s.done, s.total, percent,
                       rate_text(s), format_duration(s.eta_seconds));
}

Progress::Progress(ProgressOptions options, std::FILE* out, std::function<Clock::time_point()> now)
    : options_(options), out_(out), now_(std::move(now)), style_(resolve_style(options.style, out)) {}

Progress::~Progress() {
    if (open_) end();
}

void Progress::begin(const std::string& phase, std::int64_t total, std::int64_t already_done,
                     const std::string& unit, std::optional<Clock::time_point> since) {
    if (open_) end();
    open_ = true;
    current_ = ProgressSnapshot{};
    current_.phase = phase;
    current_.unit = unit;
    current_.total = total;
    current_.done = already_done;
    resumed_ = already_done;
    last_report_ = now_();
    started_ = since ? std::min(*since, last_report_) : last_report_;
    last_bar_length_ = 0;
    if (style_ == ProgressStyle::bar) report(false);
}

std::int64_t Progress::count(std::int64_t items) {
    // Never past the total: a caller counting work (entries read) rather than results may
    // overshoot a total given in results (rows wanted under --limit).
    const std::int64_t before = current_.done;
    current_.done = current_.total > 0 ? std::min(current_.done + items, current_.total) : current_.done + items;
    return current_.done - before;
}

void Progress::advance(std::int64_t items) {
    if (!open_) return;
    count(items);
    report_if_due();
}

void Progress::skip(std::int64_t items) {
    if (!open_) return;
    resumed_ += count(items);  // before any report: the rate must not see them
    report_if_due();
}

void Progress::report_if_due() {
    if (style_ == ProgressStyle::none) return;
    const auto interval = style_ == ProgressStyle::bar ? options_.redraw_interval : options_.log_interval;
    if (now_() - last_report_ >= interval) report(false);
}

void Progress::end(bool all_done) {
    if (!open_) return;
    if (all_done && current_.total > 0) current_.done = current_.total;
    report(true);
    open_ = false;
}

void Progress::message(const std::string& line) {
    if (style_ == ProgressStyle::none || out_ == nullptr) return;
    if (style_ == ProgressStyle::bar && open_) {
        // Clear the bar, print the message, redraw the bar below it.
        std::fprintf(out_, "\r%*s\r%s\n", static_cast<int>(last_bar_length_), "", line.c_str());
        last_bar_length_ = 0;
        report(false);
    } else {
        std::fprintf(out_, "%s\n", line.c_str());
        std::fflush(out_);
    }
}

ProgressSnapshot Progress::snapshot() const {
    ProgressSnapshot s = current_;
    const double elapsed = std::chrono::duration<double>(now_() - started_).count();
    const auto fresh = current_.done - resumed_;
    if (elapsed > 0.0 && fresh > 0) {
        s.rate = static_cast<double>(fresh) / elapsed;
        if (current_.total > 0) {
            s.eta_seconds = static_cast<double>(std::max<std::int64_t>(current_.total - current_.done, 0)) / s.rate;
        }
    }
    if (current_.total > 0 && current_.done >= current_.total) s.eta_seconds = 0.0;
    return s;
}

void Progress::report(bool final_report) {
    last_report_ = now_();
    if (style_ == ProgressStyle::none || out_ == nullptr) return;
    const ProgressSnapshot s = snapshot();
    if (style_ == ProgressStyle::bar) {
        const std::string line = format_bar_line(s, options_.bar_width);
        // Pad with spaces so a shorter line fully covers the previous one.
        const int pad = static_cast<int>(last_bar_length_ > line.size() ? last_bar_length_ - line.size() : 0);
        std::fprintf(out_, "\r%s%*s%s", line.c_str(), pad, "", final_report ? "\n" : "");
        last_bar_length_ = line.size();
    } else {
        std::fprintf(out_, "%s\n", format_log_line(s).c_str());
    }
    std::fflush(out_);
}

}  // namespace fstore
