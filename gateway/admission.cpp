#include "gateway/admission.hpp"

#include "config/plural.hpp"
#include "gateway/observability/rate_limited_log.hpp"

namespace spark::gateway {

std::string ConnectionAdmission::refusal_reason(const Spark& spark) const {
  const auto& c = spark.config();
  const bool will_wait = spark.state() != SparkState::running;
  // Every spark has its caps, its own or the defaults (discovered sparks too): one spark must not
  // fill the gateway-wide ones for every other.
  const int max_connections = c.max_connections.value_or(cfg_.default_max_connections);
  const int max_waiting = c.max_waiting.value_or(cfg_.default_max_waiting);
  if (spark.open_connections() >= max_connections)
    return config::counted(spark.open_connections(), "connection") + " open (" +
           (c.max_connections ? "sparks[].max_connections " : "defaults.max_connections ") +
           std::to_string(max_connections) + ")";
  if (will_wait && spark.waiting_connections() >= max_waiting)
    return config::counted(spark.waiting_connections(), "connection") + " waiting for its wake (" +
           (c.max_waiting ? "sparks[].max_waiting " : "defaults.max_waiting ") + std::to_string(max_waiting) + ")";
  if (const auto open = load_.open(); static_cast<int>(open) >= cfg_.max_connections)
    return config::counted(open, "connection") + " open in the gateway (limits.max_connections " +
           std::to_string(cfg_.max_connections) + ")";
  if (!will_wait) return {};
  if (const int waiting = load_.waiting(); waiting >= cfg_.max_waiting)
    return config::counted(waiting, "connection") + " waiting for wakes in the gateway (limits.max_waiting " +
           std::to_string(cfg_.max_waiting) + ")";
  return {};
}

std::optional<std::string> ConnectionAdmission::refuse(Spark& spark, const std::string& from) const {
  auto why = refusal_reason(spark);
  if (why.empty()) return std::nullopt;
  spark.metrics().count_connection(ConnectionOutcome::rejected);
  log_refusal("spark " + spark.name(), from, why);  // a line at once, then one count per 10 s
  return why;
}

}  // namespace spark::gateway
