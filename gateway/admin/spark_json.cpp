#include "gateway/admin/spark_json.hpp"

#include "activity/time_format.hpp"

namespace spark::gateway {

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
      {"last_wake_error", s.last_wake_error.empty() ? json(nullptr) : json(s.last_wake_error)},
      {"turned_away", s.turned_away},
      {"last_client", s.last_client.empty() ? json(nullptr) : json(s.last_client)},
      {"ports", std::move(ports)},
      {"ssh", s.ssh},
      {"ssh_url", s.ssh_url},
  };
}

}  // namespace spark::gateway
