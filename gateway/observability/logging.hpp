#pragma once
// Logging setup: human-readable lines (default) or one JSON object per line for log shippers.
#include <spdlog/common.h>
#include <spdlog/formatter.h>

#include <memory>
#include <string>
#include <string_view>

namespace spark::gateway {

enum class LogFormat { text, json };

// Logs to stderr. Every line is flushed at once: operators tail this.
void setup_logging(spdlog::level::level_enum level, LogFormat format);

// The text format: "2026-11-22T15:04:05.123+0000 info spark brave-dolphin: ready in 60ms", with
// the message passed through escape_control_characters. Messages carry strings from the outside
// (SSH user names, spark names from requests, annotations, children's output); escaping them
// here, where every line is written, means no call site can forget it.
std::unique_ptr<spdlog::formatter> make_text_formatter();

// One log line stays one line on any terminal: newline, CR and tab become \n, \r, \t; other
// C0 controls, DEL and bytes that are not UTF-8 become \xNN (ESC is \x1b); C1 controls
// (U+0080..U+009F), U+2028/U+2029 and the bidirectional overrides become \uXXXX. Other UTF-8 and
// backslashes are left alone.
std::string escape_control_characters(std::string_view text);

// JSON string escaping for the json format (exposed for tests).
std::string json_escape(std::string_view text);

}  // namespace spark::gateway
