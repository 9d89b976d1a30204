#pragma once
// Whether a new connection to a spark may open: one decision for every way in (a spark's TCP
// listener, the jump host), with the same caps, and the same bookkeeping of a refusal
// (DESIGN.md: "one admission path for every way in"). Main loop only.
//
//   per spark:    max_connections (open, every path), max_waiting (waiting for its wake)
//   gateway-wide: limits.max_connections (open, every path and spark),
//                 limits.max_waiting (waiting for wakes, every spark)
//
// A refusal is counted (spark_gateway_connections_total{outcome="rejected"}) and logged once per
// spark per 10 s with a count, whichever way the connection came in.
#include <cstddef>
#include <functional>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "gateway/spark.hpp"

namespace spark::gateway {

class ConnectionAdmission {
 public:
  // The whole gateway's load, as the caps count it, asked only when a decision needs it.
  struct Load {
    std::function<std::size_t()> open;  // connections open: TCP and jump, waiting or spliced
    std::function<int()> waiting;       // connections waiting for a wake, every spark
  };

  // `cfg` is read at each decision (a reload changes the caps for new connections only).
  ConnectionAdmission(const config::Config& cfg, Load load) : cfg_(cfg), load_(std::move(load)) {}

  // Why a new connection to `spark` must be refused (which cap is reached), or empty.
  std::string refusal_reason(const Spark& spark) const;

  // The decision, and for a refusal what every path does with it: counts it and logs it
  // (`from`: the client's address). Returns the reason, or nullopt when the connection may open.
  std::optional<std::string> refuse(Spark& spark, const std::string& from) const;

 private:
  const config::Config& cfg_;
  Load load_;
};

}  // namespace spark::gateway
