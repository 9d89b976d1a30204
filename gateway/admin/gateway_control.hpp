#pragma once
// What the admin API (and through it the CLI and status page) may ask of the running gateway.
// Every call is safe from any thread: the gateway carries it out on its main loop.
#include <optional>
#include <string>
#include <vector>

#include "activity/spark_history.hpp"
#include "config/duration.hpp"
#include "gateway/observability/spark_status.hpp"

namespace spark::gateway {

struct ControlOutcome {
  enum class Kind { ok, accepted, not_found, conflict, failed };
  Kind kind = Kind::ok;
  std::string error;                 // set unless ok/accepted
  std::optional<SparkStatus> spark;  // the spark after the operation, when known
};

// A spark's history (activity/spark_history.hpp) as of `now`, both read on the main loop.
struct SparkHistoryView {
  std::string name;
  activity::TimePoint now{};
  activity::SparkHistory history;
};

class GatewayControl {
 public:
  virtual ~GatewayControl() = default;

  virtual std::vector<SparkStatus> sparks() = 0;
  virtual std::optional<SparkStatus> spark(const std::string& name) = 0;
  // The history of one spark, and of every spark served (the fleet), all as of the same now.
  virtual std::optional<SparkHistoryView> history(const std::string& name) = 0;
  virtual std::vector<SparkHistoryView> histories() = 0;

  // Starts (or joins) a wake. With `wait`, returns once the spark runs or the wake failed.
  virtual ControlOutcome wake(const std::string& name, bool wait) = 0;
  // Puts a spark to sleep and returns when it sleeps. Refused (conflict) while connections are
  // open, unless `force`.
  virtual ControlOutcome sleep(const std::string& name, bool force) = 0;
  // Holds the spark awake for `hold` from now; nullopt clears the hold.
  virtual ControlOutcome keep_awake(const std::string& name, std::optional<config::Duration> hold) = 0;

  // Listeners are up and the gateway is not shutting down.
  // This and leads_reaper() answer /readyz on the admin event loop itself, so that no abuse of
  // the admin port can delay the probe: they must return at once (atomics, a short lock),
  // never wait for the main loop.
  virtual bool ready() = 0;
  // This replica runs the idle reaper for Kubernetes sparks (always true without leader election).
  virtual bool leads_reaper() = 0;
};

}  // namespace spark::gateway
