#pragma once
// A point-in-time view of one spark, as the admin API, the CLI, the status page and the metrics
// show it. Built on the main loop, then read anywhere.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "activity/time_format.hpp"

namespace spark::gateway {

// A dev port beside SSH (docs/configuration.md, "Dev ports").
struct PortStatus {
  std::string name;    // "web"
  int port = 0;        // the spark's own
  std::string listen;  // the gateway's address for it
  std::string url;     // how people reach it: the tailnet name's, else the gateway's address
};

struct SparkStatus {
  std::string name;
  std::string state;    // sleeping | queued | waking | running | stopping | failed
  std::string backend;  // process | exec
  std::string listen;
  std::string target;
  int open_connections = 0;
  // nullopt: no activity recorded yet (a Deployment never used through any gateway).
  std::optional<activity::TimePoint> last_activity;
  std::optional<double> idle_timeout_seconds;    // nullopt: never
  std::optional<activity::TimePoint> sleeps_at;  // when the reaper may act; nullopt if not due
  std::optional<activity::TimePoint> keep_awake_until;
  std::uint64_t wakes = 0;
  // While its wake waits for a free place under limits.max_running (state "queued"): its place
  // in line (1: next).
  std::optional<int> queue_position;
  double awake_seconds = 0;  // not asleep (waking, running, stopping, failed) since the gateway started
  // From the spark's history (activity/spark_history.hpp), which outlives restarts: time awake
  // over the last day and week, and the share of the time known then that it slept (nullopt:
  // nothing known; time the gateway was down is unknown, in neither).
  double awake_24h_seconds = 0;
  double awake_7d_seconds = 0;
  std::optional<double> slept_share_24h;
  std::optional<double> slept_share_7d;
  std::string last_wake_error;    // empty unless the last wake failed
  std::uint64_t turned_away = 0;  // connections closed before waking it (not a person's client)
  std::string last_client;        // who opened the latest connection (the real client behind a proxy)
  std::vector<PortStatus> ports;  // dev ports
  std::string ssh;                // how people reach SSH: "ssh brave-dolphin", "ssh -p 2201 127.0.0.1"
  std::string ssh_url;            // the same as a URL: "ssh://brave-dolphin", "ssh://127.0.0.1:2201"
};

}  // namespace spark::gateway
