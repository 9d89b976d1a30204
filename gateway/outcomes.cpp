#include "gateway/outcomes.hpp"

namespace spark::gateway {

std::string_view to_string(SleepReason r) {
  switch (r) {
    case SleepReason::idle: return "idle";
    case SleepReason::api: return "api";
    case SleepReason::shutdown: return "shutdown";
    case SleepReason::removed: return "removed";
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

}  // namespace spark::gateway
