#include "gateway/admin/spark_json.hpp"

#include "activity/time_format.hpp"

namespace spark::gateway {
namespace {

using activity::TimePoint;
using nlohmann::json;

constexpr std::chrono::hours kDay{24};

std::string time_text(TimePoint t) { return activity::format_rfc3339(t); }

json totals_to_json(const activity::StateTotals& t) {
  const auto share = t.slept_share();
  return {{"awake_seconds", t.awake_seconds},
          {"asleep_seconds", t.asleep_seconds},
          {"unknown_seconds", t.unknown_seconds},
          {"slept_share", share ? json(*share) : json(nullptr)}};
}

void add(activity::StateTotals& sum, const activity::StateTotals& t) {
  sum.awake_seconds += t.awake_seconds;
  sum.asleep_seconds += t.asleep_seconds;
  sum.unknown_seconds += t.unknown_seconds;
}

}  // namespace

nlohmann::json to_json(const SparkStatus& s) {
  using nlohmann::json;
  auto time_or_null = [](const std::optional<activity::TimePoint>& t) {
    return t ? json(activity::format_rfc3339(*t)) : json(nullptr);
  };
  json ports = json::array();
  for (const auto& p : s.ports)
    ports.push_back({{"name", p.name}, {"port", p.port}, {"listen", p.listen}, {"url", p.url}});
  return {
      {"name", s.name},
      {"state", s.state},
      {"backend", s.backend},
      {"listen", s.listen},
      {"target", s.target},
      {"open_connections", s.open_connections},
      {"last_activity", time_or_null(s.last_activity)},  // null: never used
      {"idle_timeout_seconds", s.idle_timeout_seconds ? json(*s.idle_timeout_seconds) : json(nullptr)},
      {"sleeps_at", time_or_null(s.sleeps_at)},
      {"keep_awake_until", time_or_null(s.keep_awake_until)},
      {"wakes", s.wakes},
      {"queue_position", s.queue_position ? json(*s.queue_position) : json(nullptr)},  // null: not queued
      // From the history, which outlives restarts (null share: nothing of that time known).
      {"awake_24h_seconds", s.awake_24h_seconds},
      {"awake_7d_seconds", s.awake_7d_seconds},
      {"slept_share_24h", s.slept_share_24h ? json(*s.slept_share_24h) : json(nullptr)},
      {"slept_share_7d", s.slept_share_7d ? json(*s.slept_share_7d) : json(nullptr)},
      {"last_wake_error", s.last_wake_error.empty() ? json(nullptr) : json(s.last_wake_error)},
      {"turned_away", s.turned_away},
      {"last_client", s.last_client.empty() ? json(nullptr) : json(s.last_client)},
      {"ports", std::move(ports)},
      {"ssh", s.ssh},
      {"ssh_url", s.ssh_url},
  };
}

json history_to_json(const SparkHistoryView& view, std::chrono::hours window) {
  const auto& h = view.history;
  const TimePoint from = view.now - window;
  json intervals = json::array();
  for (const auto& e : h.timeline(from, view.now)) {
    intervals.push_back({{"from", time_text(e.from)},
                         {"to", e.ongoing ? json(nullptr) : json(time_text(e.to))},  // null: still going
                         {"state", std::string(activity::to_string(e.state))}});
  }
  json wakes = json::array();
  for (const auto& w : h.wakes_between(from, view.now))
    wakes.push_back({{"at", time_text(w.at)}, {"cause", w.cause}});
  json in_use = json::array();
  const bool in_use_now = h.in_use_since().has_value();
  const auto spans = h.in_use_between(from, view.now);
  for (std::size_t i = 0; i < spans.size(); ++i) {
    const bool open = in_use_now && i + 1 == spans.size();
    in_use.push_back(
        {{"from", time_text(spans[i].from)}, {"to", open ? json(nullptr) : json(time_text(spans[i].to))}});
  }
  return {{"name", view.name},
          {"now", time_text(view.now)},
          {"from", time_text(from)},
          {"intervals", std::move(intervals)},
          {"wakes", std::move(wakes)},
          {"in_use", std::move(in_use)},
          {"totals",
           {{"24h", totals_to_json(h.totals(view.now - kDay, view.now))},
            {"7d", totals_to_json(h.totals(view.now - activity::kHistoryWindow, view.now))}}}};
}

json fleet_history_to_json(const std::vector<SparkHistoryView>& sparks, std::chrono::hours window) {
  const TimePoint now = sparks.empty() ? std::chrono::system_clock::now() : sparks.front().now;
  activity::StateTotals day;
  activity::StateTotals week;
  json list = json::array();
  for (const auto& view : sparks) {
    add(day, view.history.totals(view.now - kDay, view.now));
    add(week, view.history.totals(view.now - activity::kHistoryWindow, view.now));
    list.push_back(history_to_json(view, window));
  }
  // Spark-hours: each spark's seconds summed, so the share weighs every spark by the time known of it.
  return {{"now", time_text(now)},
          {"totals", {{"24h", totals_to_json(day)}, {"7d", totals_to_json(week)}}},
          {"sparks", std::move(list)}};
}

}  // namespace spark::gateway
