#pragma once
// Logging setup: human-readable lines (default) or one JSON object per line for log shippers.
#include <spdlog/common.h>

#include <string>

namespace spark::gateway {

enum class LogFormat { text, json };

// Logs to stderr. Every line is flushed at once: operators tail this.
void setup_logging(spdlog::level::level_enum level, LogFormat format);

// JSON string escaping for the json format (exposed for tests).
std::string json_escape(std::string_view text);

}  // namespace spark::gateway
