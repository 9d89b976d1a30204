// The admin section's bounds (admin.max_connections, admin.request_timeout): defaults, values
// and the errors that name the key. The rest of the config is config_test.cpp's.
#include <gtest/gtest.h>

#include "config/config.hpp"

namespace spark::config {
namespace {

using namespace std::chrono_literals;

Config parse(const std::string& admin) {
  return parse_config(R"({"state_dir": "state", "admin": )" + admin + R"(, "sparks": []})", "/tmp/admincfg/config.json");
}

std::vector<std::string> problems(const std::string& admin) {
  try {
    parse(admin);
  } catch (const ConfigError& e) {
    return e.problems();
  }
  return {};
}

TEST(AdminConfig, DefaultsBoundConnectionsAndRequests) {
  const auto cfg = parse(R"({"listen": "127.0.0.1:9090"})");
  ASSERT_TRUE(cfg.admin);
  EXPECT_EQ(cfg.admin->max_connections, 64);
  EXPECT_EQ(cfg.admin->request_timeout, Duration(10s));
}

TEST(AdminConfig, BoundsCanBeSet) {
  const auto cfg = parse(R"({"listen": "127.0.0.1:9090", "max_connections": 8, "request_timeout": "2s"})");
  EXPECT_EQ(cfg.admin->max_connections, 8);
  EXPECT_EQ(cfg.admin->request_timeout, Duration(2s));
}

TEST(AdminConfig, BadBoundsNameTheKey) {
  for (const char* bad : {R"({"listen": "127.0.0.1:9090", "max_connections": 0})",
                          R"({"listen": "127.0.0.1:9090", "max_connections": "many"})",
                          R"({"listen": "127.0.0.1:9090", "max_connections": 10001})"}) {
    const auto p = problems(bad);
    ASSERT_EQ(p.size(), 1u) << bad;
    EXPECT_EQ(p[0].rfind("admin.max_connections: ", 0), 0u) << p[0];
  }
  for (const char* bad : {R"({"listen": "127.0.0.1:9090", "request_timeout": "11m"})",
                          R"({"listen": "127.0.0.1:9090", "request_timeout": "never"})",
                          R"({"listen": "127.0.0.1:9090", "request_timeout": 10})"}) {
    const auto p = problems(bad);
    ASSERT_EQ(p.size(), 1u) << bad;
    EXPECT_EQ(p[0].rfind("admin.request_timeout: ", 0), 0u) << p[0];
  }
  // Reported even when the listen address is wrong too.
  EXPECT_EQ(problems(R"({"listen": "nowhere", "max_connections": -1})").size(), 2u);
}

}  // namespace
}  // namespace spark::config
