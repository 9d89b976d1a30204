#pragma once
// Log lines for events that can come by the thousand (refused connections): at most one line per
// key per interval, with a count. A flood of refusals once wrote 19,726 lines in 30 s (issue 17);
// now it writes the first refusal at once, in full, and then one summary per interval:
//
//   spark brave-dolphin: refusing connection from 10.0.0.7: 2 connections open (sparks[].max_connections 2)
//   spark brave-dolphin: refused 1,234 connections in the last 10s, last from 10.0.0.7: 2 connections open (...)
//
// A key that stays quiet for a whole interval starts over (its next event is logged at once).
// Header-only; one small thread per instance, started at the first event, wakes only when a
// window ends, so a count is written on time even if the flood stops.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "config/duration.hpp"

namespace spark::gateway {

// 1234567 -> "1,234,567".
inline std::string with_thousands_separators(std::uint64_t n) {
  const std::string digits = std::to_string(n);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

class RateLimitedLog {
 public:
  using Clock = std::chrono::steady_clock;
  using Sink = std::function<void(const std::string&)>;

  // Summaries read "<key>: <verb> <count> <noun>[s] in the last <interval>, <detail>" (`noun`
  // is the singular: "refused 1 connection", "refused 2 connections"). The sink defaults to
  // spdlog at warn level; tests pass their own.
  RateLimitedLog(std::string verb, std::string noun, Clock::duration interval, Sink sink = {})
      : verb_(std::move(verb)), noun_(std::move(noun)), interval_(interval), sink_(std::move(sink)) {
    if (!sink_) {
      // spdlog's registry is a static too: made now, before this object is finished, it is
      // destroyed after it, so the counts this destructor flushes at exit still have a logger
      // (a static log made by the process's first log line would otherwise outlive it).
      spdlog::default_logger_raw();
      sink_ = [](const std::string& line) { spdlog::warn("{}", line); };
    }
  }

  // Writes the counts still pending (a shutdown mid-flood still says how many were refused).
  ~RateLimitedLog() {
    std::vector<std::string> lines;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      const auto now = Clock::now();
      for (auto& [key, w] : windows_)
        if (w.unlogged() > 0) lines.push_back(summary(key, w, now - (w.ends - interval_)));
      windows_.clear();
    }
    wake_.notify_all();
    if (timer_.joinable()) timer_.join();
    for (const auto& line : lines) sink_(line);
  }
  RateLimitedLog(const RateLimitedLog&) = delete;
  RateLimitedLog& operator=(const RateLimitedLog&) = delete;

  // One event under `key`: `line` is written now if the key was quiet, else the event is counted
  // and `detail` (e.g. "last from 10.0.0.7: why") describes the latest one in the summary.
  void record(const std::string& key, const std::string& line, std::string detail) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      if (auto it = windows_.find(key); it != windows_.end()) {
        ++it->second.count;
        it->second.detail = std::move(detail);
        return;
      }
      windows_.emplace(key, Window{Clock::now() + interval_, 1, true, std::move(detail)});
      if (!timer_.joinable()) timer_ = std::thread([this] { run(); });
    }
    wake_.notify_all();
    sink_(line);
  }

 private:
  struct Window {
    Clock::time_point ends;
    std::uint64_t count = 0;    // events in this window
    bool first_logged = false;  // its first event was written in full
    std::string detail;
    std::uint64_t unlogged() const { return count - (first_logged ? 1 : 0); }
  };

  std::string summary(const std::string& key, const Window& w, Clock::duration elapsed) const {
    using namespace std::chrono;
    auto ms = duration_cast<milliseconds>(elapsed);
    if (ms >= seconds(1)) ms = duration_cast<milliseconds>(round<seconds>(ms));
    return key + ": " + verb_ + " " + with_thousands_separators(w.count) + " " + noun_ +
           (w.count == 1 ? "" : "s") + " in the last " + config::format_duration(std::max(ms, milliseconds(1))) +
           ", " + w.detail;
  }

  // Ends windows as they fall due: a window with events not yet written gets its summary and a
  // new window; a window with none (only its first, already written) ends the key's burst.
  void run() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      if (windows_.empty()) {
        wake_.wait(lock, [&] { return stopping_ || !windows_.empty(); });
        continue;
      }
      auto next = Clock::time_point::max();
      for (const auto& [key, w] : windows_) next = std::min(next, w.ends);
      if (wake_.wait_until(lock, next, [&] { return stopping_; })) break;
      const auto now = Clock::now();
      std::vector<std::string> lines;
      for (auto it = windows_.begin(); it != windows_.end();) {
        Window& w = it->second;
        if (w.ends > now) {
          ++it;
        } else if (w.unlogged() == 0) {
          it = windows_.erase(it);
        } else {
          lines.push_back(summary(it->first, w, interval_));
          w = Window{now + interval_, 0, false, {}};
          ++it;
        }
      }
      lock.unlock();
      for (const auto& line : lines) sink_(line);
      lock.lock();
    }
  }

  const std::string verb_;
  const std::string noun_;
  const Clock::duration interval_;
  Sink sink_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::map<std::string, Window> windows_;
  std::thread timer_;
};

// The gateway's refusals (TCP listeners and jump host), one line per subject per 10 s:
// "spark X: refusing connection from P: why", then "spark X: refused N connections in the last
// 10s, last from P: why". One instance for the process, so every path shares the budget.
inline constexpr std::chrono::seconds kRefusalLogInterval{10};

inline RateLimitedLog& refusal_log() {
  static RateLimitedLog log("refused", "connection", kRefusalLogInterval);
  return log;
}

// `subject` is "spark NAME" or "jump"; `from` the client's address.
inline void log_refusal(const std::string& subject, const std::string& from, const std::string& why) {
  refusal_log().record(subject, subject + ": refusing connection from " + from + ": " + why,
                       "last from " + from + ": " + why);
}

// Connections closed before their spark was woken (issue 19: bare connects, port scans, health
// checks, not SSH), at info level: routine on a port a monitor or scanner reaches.
inline RateLimitedLog& turned_away_log() {
  static RateLimitedLog log("turned away", "connection", kRefusalLogInterval,
                            [](const std::string& line) { spdlog::info("{}", line); });
  return log;
}

inline void log_turned_away(const std::string& subject, const std::string& from, const std::string& why) {
  turned_away_log().record(subject,
                           subject + ": turned away a connection from " + from + " without waking it: " + why,
                           "last from " + from + ": " + why);
}

}  // namespace spark::gateway
