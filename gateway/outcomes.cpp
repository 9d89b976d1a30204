#include "gateway/outcomes.hpp"

#include "config/duration.hpp"

namespace spark::gateway {

std::string_view to_string(SleepReason r) {
  switch (r) {
    case SleepReason::idle: return "idle";
    case SleepReason::api: return "api";
    case SleepReason::shutdown: return "shutdown";
    case SleepReason::removed: return "removed";
    case SleepReason::evicted: return "evicted";
  }
  return "unknown";
}

std::string_view to_string(ConnectionEnd e) {
  switch (e) {
    case ConnectionEnd::closed: return "closed";
    case ConnectionEnd::error: return "error";
    case ConnectionEnd::client_unreachable: return "client_unreachable";
    case ConnectionEnd::spark_unreachable: return "spark_unreachable";
  }
  return "unknown";
}

std::string unreachable_words(ConnectionEnd end, std::chrono::milliseconds keepalive_bound) {
  return std::string("closed: peer unreachable (keepalive): no answer from the ") +
         (end == ConnectionEnd::client_unreachable ? "client" : "spark") + " within " +
         config::format_duration(keepalive_bound);
}

std::string_view to_string(TurnedAway t) {
  switch (t) {
    case TurnedAway::closed_silent: return "closed_silent";
    case TurnedAway::not_ssh: return "not_ssh";
    case TurnedAway::proxy_local: return "proxy_local";
    case TurnedAway::proxy_refused: return "proxy_refused";
  }
  return "unknown";
}

}  // namespace spark::gateway
