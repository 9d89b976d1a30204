// Any bytes as a config file: a Config or a ConfigError listing problems, never a crash.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>

#include "config/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto dir = [] {
    char tmpl[] = "/tmp/config-fuzz-XXXXXX";
    return std::filesystem::path(::mkdtemp(tmpl));
  }();
  const auto file = dir / "gateway.json";
  std::ofstream(file, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data),
                                                                static_cast<std::streamsize>(size));
  try {
    const auto cfg = spark::config::load_config(file);
    for (const auto& s : cfg.sparks) (void)s.target();
  } catch (const spark::config::ConfigError& e) {
    if (e.problems().empty()) __builtin_trap();  // an error must say what is wrong
  }
  return 0;
}
