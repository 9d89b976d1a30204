#pragma once
// The body of POST /api/v1/sparks/NAME/keep-awake: {"for": "4h"}.
#include <string>
#include <string_view>
#include <variant>

#include "config/duration.hpp"

namespace spark::gateway {

// The hold, or what is wrong with the body (for a 400 answer).
std::variant<config::Duration, std::string> parse_keep_awake_body(std::string_view body);

}  // namespace spark::gateway
