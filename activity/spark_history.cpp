#include "activity/spark_history.hpp"

#include <algorithm>

namespace spark::activity {
namespace {

// At most `max_bytes` of `text`, cut before a UTF-8 continuation byte so a multi-byte
// character is never split (a peer's jump login name may hold any).
std::string cut_utf8(std::string_view text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  std::size_t end = max_bytes;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return std::string(text.substr(0, end));
}

double seconds(TimePoint from, TimePoint to) { return std::chrono::duration<double>(to - from).count(); }

template <typename T>
void keep_at_most(std::deque<T>& list, std::size_t max) {
  while (list.size() > max) list.pop_front();
}

}  // namespace

std::string_view to_string(HistoryState s) {
  switch (s) {
    case HistoryState::asleep: return "asleep";
    case HistoryState::awake: return "awake";
    case HistoryState::unknown: return "unknown";
  }
  return "unknown";
}

std::optional<double> StateTotals::slept_share() const {
  const double known = awake_seconds + asleep_seconds;
  if (known <= 0) return std::nullopt;
  return asleep_seconds / known;
}

TimePoint SparkHistory::known_until() const {
  if (current_) return current_->since;
  return intervals_.empty() ? TimePoint{} : intervals_.back().to;
}

void SparkHistory::push_interval(StateInterval interval) {
  if (interval.to <= interval.from) return;  // nothing happened in it
  // Contiguous and the same: one interval (a restart that changed nothing, e.g.).
  if (!intervals_.empty() && intervals_.back().to == interval.from && intervals_.back().awake == interval.awake) {
    intervals_.back().to = interval.to;
    return;
  }
  intervals_.push_back(interval);
  keep_at_most(intervals_, kMaxIntervals);
}

void SparkHistory::record_state(TimePoint at, bool awake) {
  at = std::max(at, known_until());
  if (current_) {
    if (current_->awake == awake) return;
    push_interval({current_->since, at, current_->awake});
  }
  current_ = CurrentState{at, awake};
  prune(at);
}

void SparkHistory::begin_if_unknown(TimePoint at, bool awake) {
  if (!current_) record_state(at, awake);
}

void SparkHistory::record_wake(TimePoint at, std::string_view cause) {
  if (!wakes_.empty()) at = std::max(at, wakes_.back().at);
  wakes_.push_back({at, cut_utf8(cause, kMaxWakeCauseBytes)});
  keep_at_most(wakes_, kMaxWakes);
  prune(at);
}

void SparkHistory::in_use_began(TimePoint at) {
  if (in_use_since_) return;
  if (!in_use_.empty()) {
    const TimeSpan last = in_use_.back();
    // The same stretch of use, taken up again; not across a sleep (or a restart), which the
    // timeline must show between the two.
    const bool awake_since_then = current_ && current_->awake && current_->since <= last.to;
    if (awake_since_then && at <= last.to + kInUseMergeGap) {
      in_use_.pop_back();
      in_use_since_ = last.from;
      return;
    }
  }
  in_use_since_ = at;
  prune(at);
}

void SparkHistory::in_use_ended(TimePoint at) {
  if (!in_use_since_) return;
  in_use_.push_back({*in_use_since_, std::max(at, *in_use_since_)});
  in_use_since_.reset();
  keep_at_most(in_use_, kMaxInUseSpans);
}

void SparkHistory::close(TimePoint at) {
  if (current_) {
    push_interval({current_->since, std::max(at, current_->since), current_->awake});
    current_.reset();
  }
  in_use_ended(at);
}

void SparkHistory::prune(TimePoint now) {
  const TimePoint cutoff = now - kHistoryWindow;
  while (!intervals_.empty() && intervals_.front().to <= cutoff) intervals_.pop_front();
  while (!wakes_.empty() && wakes_.front().at < cutoff) wakes_.pop_front();
  while (!in_use_.empty() && in_use_.front().to <= cutoff) in_use_.pop_front();
}

std::vector<TimelineEntry> SparkHistory::timeline(TimePoint from, TimePoint to) const {
  std::vector<TimelineEntry> out;
  TimePoint cursor = from;
  const auto add = [&](TimePoint a, TimePoint b, bool awake, bool ongoing) {
    a = std::max(a, cursor);
    b = std::min(b, to);
    if (a >= b) return;
    if (a > cursor) out.push_back({cursor, a, HistoryState::unknown, false});
    out.push_back({a, b, awake ? HistoryState::awake : HistoryState::asleep, ongoing});
    cursor = b;
  };
  for (const auto& i : intervals_) add(i.from, i.to, i.awake, false);
  if (current_) add(current_->since, to, current_->awake, true);
  if (cursor < to) out.push_back({cursor, to, HistoryState::unknown, false});
  return out;
}

StateTotals SparkHistory::totals(TimePoint from, TimePoint to) const {
  StateTotals t;
  for (const auto& e : timeline(from, to)) {
    const double s = seconds(e.from, e.to);
    switch (e.state) {
      case HistoryState::awake: t.awake_seconds += s; break;
      case HistoryState::asleep: t.asleep_seconds += s; break;
      case HistoryState::unknown: t.unknown_seconds += s; break;
    }
  }
  return t;
}

std::vector<TimeSpan> SparkHistory::in_use_between(TimePoint from, TimePoint to) const {
  std::vector<TimeSpan> out;
  const auto add = [&](TimePoint a, TimePoint b) {
    a = std::max(a, from);
    b = std::min(b, to);
    if (a < b) out.push_back({a, b});
  };
  for (const auto& s : in_use_) add(s.from, s.to);
  if (in_use_since_) add(*in_use_since_, to);
  return out;
}

std::vector<WakeRecord> SparkHistory::wakes_between(TimePoint from, TimePoint to) const {
  std::vector<WakeRecord> out;
  for (const auto& w : wakes_)
    if (w.at >= from && w.at < to) out.push_back(w);
  return out;
}

std::optional<std::string> SparkHistory::restore_interval(const StateInterval& interval) {
  if (interval.to < interval.from) return "it ends before it begins";
  if (current_) return "it comes after the current state";
  if (!intervals_.empty() && interval.from < intervals_.back().to) return "it overlaps the interval before it";
  push_interval(interval);
  return std::nullopt;
}

std::optional<std::string> SparkHistory::restore_current(const CurrentState& current) {
  if (current_) return "a current state is already known";
  if (!intervals_.empty() && current.since < intervals_.back().to)
    return "it begins before the last interval ends";
  current_ = current;
  return std::nullopt;
}

std::optional<std::string> SparkHistory::restore_wake(WakeRecord wake) {
  if (!wakes_.empty() && wake.at < wakes_.back().at) return "it is older than the wake before it";
  wake.cause = cut_utf8(wake.cause, kMaxWakeCauseBytes);
  wakes_.push_back(std::move(wake));
  keep_at_most(wakes_, kMaxWakes);
  return std::nullopt;
}

std::optional<std::string> SparkHistory::restore_in_use(const TimeSpan& span) {
  if (span.to < span.from) return "it ends before it begins";
  if (in_use_since_) return "it comes after the open span";
  if (!in_use_.empty() && span.from < in_use_.back().to) return "it overlaps the span before it";
  in_use_.push_back(span);
  keep_at_most(in_use_, kMaxInUseSpans);
  return std::nullopt;
}

std::optional<std::string> SparkHistory::restore_in_use_since(TimePoint since) {
  if (in_use_since_) return "an open span is already known";
  if (!in_use_.empty() && since < in_use_.back().to) return "it begins before the last span ends";
  in_use_since_ = since;
  return std::nullopt;
}

}  // namespace spark::activity
