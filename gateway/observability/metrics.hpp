#pragma once
// The gateway's Prometheus metrics. Names and labels are a contract with dashboards; see
// docs/metrics.md. Event counters live in prometheus-cpp families (lock-free increments, handles
// looked up once per spark, so the data path never allocates or locks); gauges that describe
// the current state of sparks are produced at scrape time from a snapshot (see
// SparkSnapshotSource), so they can never drift from the truth.
#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "gateway/observability/spark_status.hpp"
#include "gateway/outcomes.hpp"

namespace spark::gateway {

// Per-spark handles into the families; references stay valid for the Metrics' lifetime.
struct SparkMetrics {
  prometheus::Counter& bytes_client_to_spark;
  prometheus::Counter& bytes_spark_to_client;
  prometheus::Counter& connections_spliced;
  prometheus::Counter& connections_wake_failed;
  prometheus::Counter& connections_upstream_failed;
  prometheus::Counter& connections_rejected;
  prometheus::Counter& turned_away_closed_silent;
  prometheus::Counter& turned_away_not_ssh;
  prometheus::Counter& turned_away_proxy_local;
  prometheus::Counter& turned_away_proxy_refused;
  prometheus::Counter& ended_closed;
  prometheus::Counter& ended_error;
  prometheus::Counter& ended_client_unreachable;
  prometheus::Counter& ended_spark_unreachable;
  prometheus::Counter& wakes_success;
  prometheus::Counter& wakes_failure;
  prometheus::Histogram& wake_duration;
  prometheus::Histogram& connection_duration;  // spliced sessions, open to end
  prometheus::Counter& sleeps_idle;
  prometheus::Counter& sleeps_api;
  prometheus::Counter& sleeps_shutdown;
  prometheus::Counter& sleeps_removed;
  prometheus::Counter& sleeps_evicted;

  void count_connection(ConnectionOutcome outcome);
  void count_end(ConnectionEnd end);
  void count_turned_away(TurnedAway why);
  std::uint64_t turned_away() const;  // every reason, for the status view
  void count_sleep(SleepReason reason);
};

// A spark's dev port (docs/configuration.md, "Dev ports"): series of its own, labelled
// port="NAME", for what is the port's: connections spliced or closed because the port did not
// answer, and bytes. Failed wakes and refusals stay the spark's. A spark without dev ports has
// none of these series.
struct PortMetrics {
  prometheus::Counter& bytes_client_to_spark;
  prometheus::Counter& bytes_spark_to_client;
  prometheus::Counter& connections_spliced;
  prometheus::Counter& connections_port_closed;
};

class Metrics {
 public:
  // Produces the current state of every spark; called at scrape time from the admin thread.
  using SnapshotSource = std::function<std::vector<SparkStatus>()>;

  explicit Metrics(std::string version);

  // Handles for one spark (created on first use). Call from the main loop.
  SparkMetrics& spark(const std::string& name);
  PortMetrics& port(const std::string& spark, const std::string& port);

  void set_snapshot_source(SnapshotSource source);

  // Kubernetes API requests (any thread): verb, HTTP status (0: no answer), duration.
  void count_kubernetes_request(std::string_view verb, int code, double seconds);
  // Activity that could not be stored (`store`: state_file, kubernetes); it stays in memory
  // and is retried.
  void count_persist_failure(std::string_view store);
  // Shows a store's failure counter at 0 before any failure, so rate() and alerts work from the start.
  void expose_persist_store(std::string_view store);
  // Whether this replica runs the idle reaper for Kubernetes sparks (any thread).
  void set_leader(bool leading) { leader_.Set(leading ? 1 : 0); }
  // limits.max_running (main loop): sparks holding a place, the cap (nullopt: none, and no
  // series), wakes in line; a wake's time in line, admitted or not; a spark put to sleep to
  // make room.
  void set_running_sparks(int running, std::optional<int> limit, int in_line);
  void observe_wake_queue(double seconds, bool admitted);
  void count_eviction() { evictions_.Increment(); }

  // The whole exposition in the Prometheus text format 0.0.4.
  std::string scrape() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& connections_;
  prometheus::Family<prometheus::Counter>& turned_away_;
  prometheus::Family<prometheus::Counter>& ended_;
  prometheus::Family<prometheus::Counter>& bytes_;
  prometheus::Family<prometheus::Counter>& wakes_;
  prometheus::Family<prometheus::Histogram>& wake_duration_;
  prometheus::Family<prometheus::Histogram>& connection_duration_;
  prometheus::Family<prometheus::Counter>& sleeps_;
  prometheus::Family<prometheus::Counter>& kube_requests_;
  prometheus::Family<prometheus::Histogram>& kube_latency_;
  prometheus::Family<prometheus::Counter>& persist_failures_;
  prometheus::Gauge& leader_;
  prometheus::Gauge& running_sparks_;
  prometheus::Family<prometheus::Gauge>& running_limit_;
  prometheus::Gauge* running_limit_series_ = nullptr;  // while a cap is configured
  prometheus::Gauge& wake_queue_length_;
  prometheus::Family<prometheus::Histogram>& wake_queue_;
  prometheus::Histogram& wake_queue_admitted_;
  prometheus::Histogram& wake_queue_gave_up_;
  prometheus::Counter& evictions_;
  std::map<std::string, std::unique_ptr<SparkMetrics>> sparks_;
  std::map<std::pair<std::string, std::string>, std::unique_ptr<PortMetrics>> ports_;  // by spark, port
  mutable std::mutex source_mu_;
  SnapshotSource source_;
};

// For code that runs without a gateway around it (unit tests): metrics nobody scrapes.
Metrics& unscraped_metrics();

}  // namespace spark::gateway
