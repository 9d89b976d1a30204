// Durations: parsing never crashes, and what parses formats back to the same value.
#include <cstdint>
#include <string>

#include "config/duration.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::string why;
  if (const auto d = spark::config::parse_duration(text, &why)) {
    if (d->count() < 0) __builtin_trap();
    const auto again = spark::config::parse_duration(spark::config::format_duration(*d), &why);
    if (!again || *again != *d) __builtin_trap();
  } else if (why.empty()) {
    __builtin_trap();  // a refusal says why
  }
  (void)spark::config::parse_duration_or_never(text, &why);
  return 0;
}
