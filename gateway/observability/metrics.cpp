#include "gateway/observability/metrics.hpp"

#include <prometheus/text_serializer.h>

#include <sstream>

#include "gateway/observability/process_metrics.hpp"

namespace spark::gateway {
namespace {

using prometheus::BuildCounter;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

double seconds_since_epoch(activity::TimePoint t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

ClientMetric gauge(std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  return m;
}

const char* kStates[] = {"sleeping", "queued", "waking", "running", "stopping", "failed"};

// From a moment to wake_timeout's range: 1 s ... 10 m.
const prometheus::Histogram::BucketBoundaries kWakeQueueBuckets = {1, 5, 15, 30, 60, 120, 300, 600};

// The state gauges, built from a snapshot at scrape time.
std::vector<MetricFamily> spark_state_families(const std::vector<SparkStatus>& sparks) {
  MetricFamily open{"spark_gateway_open_connections",
                    "Client connections open through this gateway, per spark.",
                    MetricType::Gauge,
                    {}};
  MetricFamily state{"spark_gateway_spark_state",
                     "1 for the spark's current state (sleeping, queued, waking, running, stopping, failed).",
                     MetricType::Gauge,
                     {}};
  MetricFamily last{"spark_gateway_last_activity_timestamp_seconds",
                    "Unix time of the spark's last activity (a connection opening or closing; "
                    "refreshed while connections are open); absent for a spark never used.",
                    MetricType::Gauge,
                    {}};
  MetricFamily awake{"spark_gateway_spark_awake_seconds_total",
                     "Seconds the spark has not been asleep (waking, running, stopping or failed) since "
                     "this gateway started: 1 - rate() over a day is the share of it slept.",
                     MetricType::Counter,
                     {}};
  MetricFamily keep{"spark_gateway_keep_awake_until_timestamp_seconds",
                    "Unix time until which a keep-awake hold keeps the spark up (only sparks with a hold).",
                    MetricType::Gauge,
                    {}};
  for (const auto& s : sparks) {
    open.metric.push_back(gauge({{"spark", s.name}}, s.open_connections));
    ClientMetric awake_for;
    awake_for.label = {{"spark", s.name}};
    awake_for.counter.value = s.awake_seconds;
    awake.metric.push_back(std::move(awake_for));
    for (const char* st : kStates)
      state.metric.push_back(gauge({{"spark", s.name}, {"state", st}}, s.state == st ? 1 : 0));
    // A spark never used has no series: 0 (1970) would make `time() - last_activity` 56 years.
    if (s.last_activity) last.metric.push_back(gauge({{"spark", s.name}}, seconds_since_epoch(*s.last_activity)));
    if (s.keep_awake_until)
      keep.metric.push_back(gauge({{"spark", s.name}}, seconds_since_epoch(*s.keep_awake_until)));
  }
  return {open, state, awake, last, keep};
}

}  // namespace

void SparkMetrics::count_end(ConnectionEnd end) {
  switch (end) {
    case ConnectionEnd::closed: ended_closed.Increment(); break;
    case ConnectionEnd::error: ended_error.Increment(); break;
    case ConnectionEnd::client_unreachable: ended_client_unreachable.Increment(); break;
    case ConnectionEnd::spark_unreachable: ended_spark_unreachable.Increment(); break;
  }
}

void SparkMetrics::count_connection(ConnectionOutcome outcome) {
  switch (outcome) {
    case ConnectionOutcome::spliced: connections_spliced.Increment(); break;
    case ConnectionOutcome::wake_failed: connections_wake_failed.Increment(); break;
    case ConnectionOutcome::upstream_failed: connections_upstream_failed.Increment(); break;
    case ConnectionOutcome::rejected: connections_rejected.Increment(); break;
    case ConnectionOutcome::port_closed: break;  // a dev port's: PortMetrics
  }
}

void SparkMetrics::count_sleep(SleepReason reason) {
  switch (reason) {
    case SleepReason::idle: sleeps_idle.Increment(); break;
    case SleepReason::api: sleeps_api.Increment(); break;
    case SleepReason::shutdown: sleeps_shutdown.Increment(); break;
    case SleepReason::removed: sleeps_removed.Increment(); break;
    case SleepReason::evicted: sleeps_evicted.Increment(); break;
  }
}

void SparkMetrics::count_turned_away(TurnedAway why) {
  switch (why) {
    case TurnedAway::closed_silent: turned_away_closed_silent.Increment(); break;
    case TurnedAway::not_ssh: turned_away_not_ssh.Increment(); break;
    case TurnedAway::proxy_local: turned_away_proxy_local.Increment(); break;
    case TurnedAway::proxy_refused: turned_away_proxy_refused.Increment(); break;
  }
}

std::uint64_t SparkMetrics::turned_away() const {
  const double total = turned_away_closed_silent.Value() + turned_away_not_ssh.Value() +
                       turned_away_proxy_local.Value() + turned_away_proxy_refused.Value();
  return static_cast<std::uint64_t>(total);
}

Metrics::Metrics(std::string version)
    : registry_(std::make_shared<prometheus::Registry>()),
      connections_(BuildCounter()
                       .Name("spark_gateway_connections_total")
                       .Help("Client connections accepted, by how they ended up: spliced, "
                             "wake_failed, upstream_failed, rejected; a dev port's (port label): "
                             "spliced, port_closed.")
                       .Register(*registry_)),
      turned_away_(BuildCounter()
                       .Name("spark_gateway_connections_turned_away_total")
                       .Help("Connections closed before their spark was woken, by reason: closed_silent "
                             "(left without a byte: a bare connect, a port scan), not_ssh (first bytes "
                             "not an SSH identification), proxy_local (a proxy's health check), "
                             "proxy_refused (a PROXY header untrusted, missing or broken).")
                       .Register(*registry_)),
      ended_(BuildCounter()
                 .Name("spark_gateway_connections_ended_total")
                 .Help("Spliced connections that ended, by how: closed, error, client_unreachable, "
                       "spark_unreachable (keepalive found that side dead).")
                 .Register(*registry_)),
      bytes_(BuildCounter()
                 .Name("spark_gateway_bytes_total")
                 .Help("Bytes spliced, by direction (client_to_spark, spark_to_client); a dev "
                       "port's carry its name (port label), SSH's none.")
                 .Register(*registry_)),
      wakes_(BuildCounter()
                 .Name("spark_gateway_wakes_total")
                 .Help("Wakes of a sleeping spark, by outcome (success, failure).")
                 .Register(*registry_)),
      wake_duration_(prometheus::BuildHistogram()
                         .Name("spark_gateway_wake_duration_seconds")
                         .Help("Cold start: from the wake's start (the first connection's accept) "
                               "to the spark's sshd accepting a connection.")
                         .Register(*registry_)),
      connection_duration_(prometheus::BuildHistogram()
                               .Name("spark_gateway_connection_duration_seconds")
                               .Help("How long connections that reached their spark stayed open (TCP and "
                                     "jump host alike), from their open to their end.")
                               .Register(*registry_)),
      sleeps_(BuildCounter()
                  .Name("spark_gateway_sleeps_total")
                  .Help("Sparks put to sleep, by reason (idle, api, shutdown, removed, evicted).")
                  .Register(*registry_)),
      kube_requests_(BuildCounter()
                         .Name("spark_gateway_kubernetes_requests_total")
                         .Help("Kubernetes API requests, by verb and HTTP status code (<error>: no answer).")
                         .Register(*registry_)),
      kube_latency_(prometheus::BuildHistogram()
                        .Name("spark_gateway_kubernetes_request_duration_seconds")
                        .Help("Kubernetes API request latency, by verb (WATCH: the whole stream).")
                        .Register(*registry_)),
      persist_failures_(BuildCounter()
                            .Name("spark_gateway_activity_persist_failures_total")
                            .Help("Failed writes of activity (store: state_file, kubernetes); kept "
                                  "in memory and retried.")
                            .Register(*registry_)),
      leader_(prometheus::BuildGauge()
                  .Name("spark_gateway_leader")
                  .Help("1 if this replica runs the idle reaper for Kubernetes sparks (always, "
                        "without leader election), 0 while another replica holds the Lease.")
                  .Register(*registry_)
                  .Add({})),
      running_sparks_(prometheus::BuildGauge()
                          .Name("spark_gateway_running_sparks")
                          .Help("Sparks awake or waking (past the line), as limits.max_running counts "
                                "them: for Kubernetes sparks, every replica's.")
                          .Register(*registry_)
                          .Add({})),
      running_limit_(prometheus::BuildGauge()
                         .Name("spark_gateway_running_sparks_limit")
                         .Help("limits.max_running; absent without a cap.")
                         .Register(*registry_)),
      wake_queue_length_(prometheus::BuildGauge()
                             .Name("spark_gateway_wake_queue_length")
                             .Help("Wakes waiting in line under limits.max_running.")
                             .Register(*registry_)
                             .Add({})),
      wake_queue_(prometheus::BuildHistogram()
                      .Name("spark_gateway_wake_queue_seconds")
                      .Help("Time a wake waited in line under limits.max_running, by outcome (admitted; "
                            "gave_up: wake_timeout passed, or nobody waited any more).")
                      .Register(*registry_)),
      wake_queue_admitted_(wake_queue_.Add({{"outcome", "admitted"}}, kWakeQueueBuckets)),
      wake_queue_gave_up_(wake_queue_.Add({{"outcome", "gave_up"}}, kWakeQueueBuckets)),
      evictions_(BuildCounter()
                     .Name("spark_gateway_evictions_total")
                     .Help("Idle sparks put to sleep to make room for a wake in line (limits.evict_idle_after).")
                     .Register(*registry_)
                     .Add({})) {
  leader_.Set(1);
  prometheus::BuildGauge()
      .Name("spark_gateway_build_info")
      .Help("Always 1; the version label says which build is running.")
      .Register(*registry_)
      .Add({{"version", std::move(version)}})
      .Set(1);
}

void Metrics::set_running_sparks(int running, std::optional<int> limit, int in_line) {
  running_sparks_.Set(running);
  wake_queue_length_.Set(in_line);
  if (limit && !running_limit_series_) running_limit_series_ = &running_limit_.Add({});
  if (!limit && running_limit_series_) {
    running_limit_.Remove(running_limit_series_);
    running_limit_series_ = nullptr;
  }
  if (running_limit_series_) running_limit_series_->Set(*limit);
}

void Metrics::observe_wake_queue(double seconds, bool admitted) {
  (admitted ? wake_queue_admitted_ : wake_queue_gave_up_).Observe(seconds);
}

SparkMetrics& Metrics::spark(const std::string& name) {
  auto it = sparks_.find(name);
  if (it != sparks_.end()) return *it->second;
  static const prometheus::Histogram::BucketBoundaries kWakeBuckets = {0.05, 0.1, 0.25, 0.5, 1,   2.5, 5,
                                                                       10,   30,  60,   120, 300, 600};
  // From a `scp` of a second to a working day: 1 s, 10 s, 1 m, 5 m, 15 m, 30 m, 1 h ... 1 d.
  static const prometheus::Histogram::BucketBoundaries kConnectionBuckets = {1,    10,   60,    300,   900,  1800,
                                                                             3600, 7200, 14400, 28800, 86400};
  auto m = std::make_unique<SparkMetrics>(SparkMetrics{
      bytes_.Add({{"spark", name}, {"direction", "client_to_spark"}}),
      bytes_.Add({{"spark", name}, {"direction", "spark_to_client"}}),
      connections_.Add({{"spark", name}, {"outcome", "spliced"}}),
      connections_.Add({{"spark", name}, {"outcome", "wake_failed"}}),
      connections_.Add({{"spark", name}, {"outcome", "upstream_failed"}}),
      connections_.Add({{"spark", name}, {"outcome", "rejected"}}),
      turned_away_.Add({{"spark", name}, {"reason", "closed_silent"}}),
      turned_away_.Add({{"spark", name}, {"reason", "not_ssh"}}),
      turned_away_.Add({{"spark", name}, {"reason", "proxy_local"}}),
      turned_away_.Add({{"spark", name}, {"reason", "proxy_refused"}}),
      ended_.Add({{"spark", name}, {"outcome", "closed"}}),
      ended_.Add({{"spark", name}, {"outcome", "error"}}),
      ended_.Add({{"spark", name}, {"outcome", "client_unreachable"}}),
      ended_.Add({{"spark", name}, {"outcome", "spark_unreachable"}}),
      wakes_.Add({{"spark", name}, {"outcome", "success"}}),
      wakes_.Add({{"spark", name}, {"outcome", "failure"}}),
      wake_duration_.Add({{"spark", name}}, kWakeBuckets),
      connection_duration_.Add({{"spark", name}}, kConnectionBuckets),
      sleeps_.Add({{"spark", name}, {"reason", "idle"}}),
      sleeps_.Add({{"spark", name}, {"reason", "api"}}),
      sleeps_.Add({{"spark", name}, {"reason", "shutdown"}}),
      sleeps_.Add({{"spark", name}, {"reason", "removed"}}),
      sleeps_.Add({{"spark", name}, {"reason", "evicted"}}),
  });
  return *sparks_.emplace(name, std::move(m)).first->second;
}

PortMetrics& Metrics::port(const std::string& spark, const std::string& port) {
  auto& slot = ports_[{spark, port}];
  if (!slot) {
    slot = std::make_unique<PortMetrics>(PortMetrics{
        bytes_.Add({{"spark", spark}, {"direction", "client_to_spark"}, {"port", port}}),
        bytes_.Add({{"spark", spark}, {"direction", "spark_to_client"}, {"port", port}}),
        connections_.Add({{"spark", spark}, {"outcome", "spliced"}, {"port", port}}),
        connections_.Add({{"spark", spark}, {"outcome", "port_closed"}, {"port", port}}),
    });
  }
  return *slot;
}

void Metrics::count_kubernetes_request(std::string_view verb, int code, double seconds) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                                   0.5,   1,    2.5,   5,    10};
  const std::string code_label = code == 0 ? "<error>" : std::to_string(code);
  kube_requests_.Add({{"verb", std::string(verb)}, {"code", code_label}}).Increment();
  if (verb != "WATCH") kube_latency_.Add({{"verb", std::string(verb)}}, kBuckets).Observe(seconds);
}

void Metrics::expose_persist_store(std::string_view store) {
  persist_failures_.Add({{"store", std::string(store)}});
}

void Metrics::count_persist_failure(std::string_view store) {
  persist_failures_.Add({{"store", std::string(store)}}).Increment();
}

void Metrics::set_snapshot_source(SnapshotSource source) {
  std::lock_guard lock(source_mu_);
  source_ = std::move(source);
}

std::string Metrics::scrape() const {
  auto families = registry_->Collect();
  SnapshotSource source;
  {
    std::lock_guard lock(source_mu_);
    source = source_;
  }
  if (source) {
    for (auto& f : spark_state_families(source())) families.push_back(std::move(f));
  }
  for (auto& f : process_metric_families()) families.push_back(std::move(f));
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

Metrics& unscraped_metrics() {
  static Metrics metrics("unscraped");
  return metrics;
}

}  // namespace spark::gateway
