// Admin API keep-awake bodies: a duration or a reason for the 400, never a crash.
#include <cstdint>
#include <string_view>

#include "gateway/admin/keep_awake_body.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto parsed = spark::gateway::parse_keep_awake_body(
      std::string_view(reinterpret_cast<const char*>(data), size));
  if (const auto* why = std::get_if<std::string>(&parsed); why && why->empty()) __builtin_trap();
  return 0;
}
