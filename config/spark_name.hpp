#pragma once
#include <string_view>

namespace spark::config {

// True if `name` is an RFC 1123 DNS label: 1..63 characters of [a-z0-9-], starting and
// ending with an alphanumeric. Every spark name is checked with this before it reaches a
// file name, a URL or a command line.
bool is_valid_spark_name(std::string_view name);

}  // namespace spark::config
