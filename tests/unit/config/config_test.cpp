// Unit tests for config/config.hpp: parse_config, load_config, ConfigError and the
// SparkConfig / Config accessors.
#include "config/config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <variant>
#include <vector>

namespace spark::config {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::StartsWith;

const fs::path kSource = "/tmp/cfgtest/gateway.json";

// The full example from the product spec.
constexpr const char* kSpecExample = R"({
  "state_dir": "state",
  "defaults": {"idle_timeout": "2h", "wake_timeout": "5m", "drain_timeout": "30s"},
  "reaper": {"interval": "30s"},
  "sparks": [
    {"name": "brave-dolphin", "listen": "127.0.0.1:2201", "idle_timeout": "30m",
     "process": {"command": ["/usr/sbin/sshd", "-D", "-e", "-f", "brave-dolphin/sshd_config"],
                 "target": "127.0.0.1:22001"}},
    {"name": "calm-otter", "listen": "127.0.0.1:2202",
     "exec": {"start": ["systemctl", "start", "spark@calm-otter"],
              "stop": ["systemctl", "stop", "spark@calm-otter"],
              "target": "127.0.0.1:22002"}}
  ]
})";

// A valid `process` backend object, for building small configs.
constexpr const char* kProcess =
    R"("process": {"command": ["/usr/sbin/sshd", "-D"], "target": "127.0.0.1:22001"})";

// {"name": name, "listen": listen, <backend>, <extra>}
std::string Spark(const std::string& name, const std::string& listen, const std::string& backend = kProcess,
                  const std::string& extra = "") {
  std::string s = R"({"name": ")" + name + R"(", "listen": ")" + listen + R"(", )" + backend;
  if (!extra.empty()) s += ", " + extra;
  return s + "}";
}

// {"sparks": [s...]}
std::string Sparks(const std::vector<std::string>& sparks) {
  std::string s = R"({"sparks": [)";
  for (size_t i = 0; i < sparks.size(); ++i) {
    if (i) s += ", ";
    s += sparks[i];
  }
  return s + "]}";
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += "\n  " + s;
  return out;
}

// Parses `json`, failing the test (with every reported problem) if it throws.
Config ParseOk(const std::string& json, const fs::path& source = kSource) {
  try {
    return parse_config(json, source);
  } catch (const ConfigError& e) {
    ADD_FAILURE() << "unexpected ConfigError:" << Join(e.problems()) << "\nfor config:\n" << json;
  }
  return Config{};
}

// Parses `json` expecting a ConfigError; returns its problems (empty + failure otherwise).
std::vector<std::string> Problems(const std::string& json, const fs::path& source = kSource) {
  try {
    parse_config(json, source);
  } catch (const ConfigError& e) {
    EXPECT_FALSE(e.problems().empty()) << "ConfigError with no problems";
    return e.problems();
  }
  ADD_FAILURE() << "expected ConfigError for config:\n" << json;
  return {};
}

// A problem string that starts with `prefix` and contains `substr`.
auto Problem(const std::string& prefix, const std::string& substr) {
  return AllOf(StartsWith(prefix), HasSubstr(substr));
}

// ===========================================================================
// Valid configs
// ===========================================================================

TEST(ParseConfig, SpecExampleTopLevel) {
  Config cfg = ParseOk(kSpecExample);
  EXPECT_EQ(cfg.source, kSource);
  EXPECT_EQ(cfg.base_dir, fs::path("/tmp/cfgtest"));
  EXPECT_EQ(cfg.state_dir, fs::path("/tmp/cfgtest/state"));
  EXPECT_EQ(cfg.default_idle_timeout, MaybeNever{2h});
  EXPECT_EQ(cfg.default_wake_timeout, Duration(5min));
  EXPECT_EQ(cfg.drain_timeout, Duration(30s));
  EXPECT_EQ(cfg.reaper_interval, Duration(30s));
  EXPECT_EQ(cfg.activity_flush_interval, Duration(30s));
  ASSERT_THAT(cfg.sparks, SizeIs(2));
  EXPECT_EQ(cfg.sparks[0].name, "brave-dolphin");
  EXPECT_EQ(cfg.sparks[1].name, "calm-otter");
}

TEST(ParseConfig, SpecExampleProcessSpark) {
  Config cfg = ParseOk(kSpecExample);
  ASSERT_THAT(cfg.sparks, SizeIs(2));
  const SparkConfig& s = cfg.sparks[0];
  EXPECT_EQ(s.listen, (Address{"127.0.0.1", 2201}));
  EXPECT_EQ(s.idle_timeout, MaybeNever{30min});
  EXPECT_EQ(s.wake_timeout, Duration(5min));
  EXPECT_EQ(s.backend_kind(), "process");
  ASSERT_TRUE(std::holds_alternative<ProcessBackendConfig>(s.backend));
  const auto& p = std::get<ProcessBackendConfig>(s.backend);
  EXPECT_THAT(p.command, ElementsAre("/usr/sbin/sshd", "-D", "-e", "-f", "brave-dolphin/sshd_config"));
  EXPECT_EQ(p.target, (Address{"127.0.0.1", 22001}));
  EXPECT_EQ(p.stop_grace, Duration(10s));
  EXPECT_EQ(s.target(), (Address{"127.0.0.1", 22001}));
}

TEST(ParseConfig, SpecExampleExecSpark) {
  Config cfg = ParseOk(kSpecExample);
  ASSERT_THAT(cfg.sparks, SizeIs(2));
  const SparkConfig& s = cfg.sparks[1];
  EXPECT_EQ(s.listen, (Address{"127.0.0.1", 2202}));
  EXPECT_EQ(s.idle_timeout, MaybeNever{2h}) << "should inherit defaults.idle_timeout";
  EXPECT_EQ(s.wake_timeout, Duration(5min));
  EXPECT_EQ(s.backend_kind(), "exec");
  ASSERT_TRUE(std::holds_alternative<ExecBackendConfig>(s.backend));
  const auto& e = std::get<ExecBackendConfig>(s.backend);
  EXPECT_THAT(e.start, ElementsAre("systemctl", "start", "spark@calm-otter"));
  EXPECT_THAT(e.stop, ElementsAre("systemctl", "stop", "spark@calm-otter"));
  EXPECT_EQ(e.target, (Address{"127.0.0.1", 22002}));
  EXPECT_EQ(s.target(), (Address{"127.0.0.1", 22002}));
}

TEST(ParseConfig, FindSpark) {
  Config cfg = ParseOk(kSpecExample);
  const SparkConfig* otter = cfg.find_spark("calm-otter");
  ASSERT_NE(otter, nullptr);
  EXPECT_EQ(otter->name, "calm-otter");
  EXPECT_EQ(otter, &cfg.sparks[1]);
  const SparkConfig* dolphin = cfg.find_spark("brave-dolphin");
  ASSERT_NE(dolphin, nullptr);
  EXPECT_EQ(dolphin, &cfg.sparks[0]);
  EXPECT_EQ(cfg.find_spark("nope"), nullptr);
  EXPECT_EQ(cfg.find_spark(""), nullptr);
  EXPECT_EQ(cfg.find_spark("calm"), nullptr);
}

TEST(ParseConfig, EmptyObjectUsesAllDefaults) {
  Config cfg = ParseOk("{}");
  EXPECT_EQ(cfg.base_dir, fs::path("/tmp/cfgtest"));
  EXPECT_EQ(cfg.state_dir, fs::path("/tmp/cfgtest/state"));
  EXPECT_EQ(cfg.default_idle_timeout, MaybeNever{2h});
  EXPECT_EQ(cfg.default_wake_timeout, Duration(5min));
  EXPECT_EQ(cfg.drain_timeout, Duration(30s));
  EXPECT_EQ(cfg.reaper_interval, Duration(30s));
  EXPECT_EQ(cfg.activity_flush_interval, Duration(30s));
  EXPECT_TRUE(cfg.sparks.empty());
}

TEST(ParseConfig, EmptySparksArrayIsValid) {
  Config cfg = ParseOk(R"({"sparks": []})");
  EXPECT_TRUE(cfg.sparks.empty());
  EXPECT_EQ(cfg.find_spark("anything"), nullptr);
}

TEST(ParseConfig, EmptySectionsUseDefaults) {
  Config cfg = ParseOk(R"({"defaults": {}, "reaper": {}, "activity": {}, "sparks": []})");
  EXPECT_EQ(cfg.default_idle_timeout, MaybeNever{2h});
  EXPECT_EQ(cfg.default_wake_timeout, Duration(5min));
  EXPECT_EQ(cfg.drain_timeout, Duration(30s));
  EXPECT_EQ(cfg.reaper_interval, Duration(30s));
  EXPECT_EQ(cfg.activity_flush_interval, Duration(30s));
}

TEST(ParseConfig, AllOptionalTopLevelKeysAreHonoured) {
  Config cfg = ParseOk(R"({
    "state_dir": "/var/lib/spark-gateway",
    "defaults": {"idle_timeout": "45m", "wake_timeout": "90s", "drain_timeout": "10s"},
    "reaper": {"interval": "5s"},
    "activity": {"flush_interval": "1m"}
  })");
  EXPECT_EQ(cfg.state_dir, fs::path("/var/lib/spark-gateway"));
  EXPECT_EQ(cfg.default_idle_timeout, MaybeNever{45min});
  EXPECT_EQ(cfg.default_wake_timeout, Duration(90s));
  EXPECT_EQ(cfg.drain_timeout, Duration(10s));
  EXPECT_EQ(cfg.reaper_interval, Duration(5s));
  EXPECT_EQ(cfg.activity_flush_interval, Duration(1min));
}

TEST(ParseConfig, IdleTimeoutsShorterThanTheReaperIntervalAreRefusedNamingTheKeys) {
  const auto e = Problems(R"({"defaults": {"idle_timeout": "10s"}, "reaper": {"interval": "30s"},
    "sparks": [)" + Spark("brave-dolphin", "127.0.0.1:2201", kProcess, R"("idle_timeout": "5s")") +
                          R"(]})");
  EXPECT_THAT(e, Contains(Problem("defaults.idle_timeout: 10s", "reaper.interval (30s)")));
  EXPECT_THAT(e, Contains(StartsWith("sparks[0].idle_timeout: 5s")));
  // Equal is fine, and "never" always is.
  ParseOk(R"({"defaults": {"idle_timeout": "30s"}, "reaper": {"interval": "30s"}})");
  ParseOk(R"({"defaults": {"idle_timeout": "never"}, "reaper": {"interval": "1h"}})");
}

TEST(ParseConfig, PerSparkCapsDefaultToAQuarterOfTheGatewaysSoNoSparkTakesThemAll) {
  const Config plain = ParseOk("{}");
  EXPECT_EQ(plain.default_max_connections, plain.max_connections / 4);
  EXPECT_EQ(plain.default_max_waiting, plain.max_waiting / 4);
  const Config tiny = ParseOk(R"({"limits": {"max_connections": 2, "max_waiting": 3}})");
  EXPECT_EQ(tiny.default_max_connections, 1) << "at least one";
  EXPECT_EQ(tiny.default_max_waiting, 1);
  const Config set = ParseOk(R"({"defaults": {"max_connections": 10, "max_waiting": 5}})");
  EXPECT_EQ(set.default_max_connections, 10);
  EXPECT_EQ(set.default_max_waiting, 5);
  EXPECT_THAT(Problems(R"({"defaults": {"max_waiting": 0}})"), Contains(StartsWith("defaults.max_waiting: ")));
  EXPECT_THAT(Problems(R"({"defaults": {"max_conections": 1}})"),
              Contains(StartsWith("defaults.max_conections: ")));
}

TEST(ParseConfig, LimitsDefaultsAndValues) {
  Config defaults = ParseOk("{}");
  EXPECT_EQ(defaults.max_connections, 4096);
  EXPECT_EQ(defaults.max_waiting, 1024);
  EXPECT_EQ(defaults.data_threads, std::nullopt);  // one per core, decided at start
  Config cfg = ParseOk(R"({"limits": {"max_connections": 10, "max_waiting": 3, "data_threads": 0}})");
  EXPECT_EQ(cfg.max_connections, 10);
  EXPECT_EQ(cfg.max_waiting, 3);
  EXPECT_EQ(cfg.data_threads, 0);
}

TEST(ParseConfig, RunningCapAndEviction) {
  const Config none = ParseOk("{}");
  EXPECT_EQ(none.max_running, std::nullopt);  // no cap by default
  EXPECT_EQ(none.evict_idle_after, std::nullopt);
  const Config cfg = ParseOk(R"({"limits": {"max_running": 10, "evict_idle_after": "15m"}})");
  EXPECT_EQ(cfg.max_running, 10);
  EXPECT_EQ(cfg.evict_idle_after, Duration(std::chrono::minutes(15)));
  EXPECT_THAT(Problems(R"({"limits": {"max_running": 0}})"), Contains(StartsWith("limits.max_running: ")));
  EXPECT_THAT(Problems(R"({"limits": {"max_running": 2, "evict_idle_after": "soon"}})"),
              Contains(StartsWith("limits.evict_idle_after: ")));
  // Eviction makes room under a cap: alone it means nothing, and is refused as such. A bad cap
  // is its own problem, not also eviction's.
  EXPECT_THAT(Problems(R"({"limits": {"evict_idle_after": "15m"}})"),
              Contains(Problem("limits.evict_idle_after: ", "needs limits.max_running")));
  const auto bad_cap = Problems(R"({"limits": {"max_running": -1, "evict_idle_after": "15m"}})");
  EXPECT_THAT(bad_cap, Contains(StartsWith("limits.max_running: ")));
  EXPECT_THAT(bad_cap, Not(Contains(StartsWith("limits.evict_idle_after: "))));
}

TEST(ParseConfig, DataThreadsOutOfRangeIsAProblem) {
  for (const char* bad : {"-1", "65", "1.5", "\"2\""}) {
    std::vector<std::string> problems = Problems(std::string(R"({"limits": {"data_threads": )") + bad + "}}");
    EXPECT_THAT(problems, Contains(Problem("limits.data_threads: ", "from 0 to 64"))) << bad;
  }
}

TEST(ParseConfig, AbsoluteStateDirIsKept) {
  Config cfg = ParseOk(R"({"state_dir": "/srv/spark/state"})");
  EXPECT_EQ(cfg.state_dir, fs::path("/srv/spark/state"));
  EXPECT_EQ(cfg.base_dir, fs::path("/tmp/cfgtest"));
}

TEST(ParseConfig, RelativeStateDirResolvesAgainstConfigDirectory) {
  Config cfg = ParseOk(R"({"state_dir": "var/state"})", "/etc/spark/gateway.json");
  EXPECT_EQ(cfg.base_dir, fs::path("/etc/spark"));
  EXPECT_EQ(cfg.state_dir.lexically_normal(), fs::path("/etc/spark/var/state"));
  EXPECT_TRUE(cfg.state_dir.is_absolute());
}

TEST(ParseConfig, RelativeSourceYieldsAbsolutePaths) {
  Config cfg = ParseOk("{}", "some/dir/gateway.json");
  EXPECT_TRUE(cfg.source.is_absolute()) << cfg.source;
  EXPECT_TRUE(cfg.base_dir.is_absolute()) << cfg.base_dir;
  EXPECT_TRUE(cfg.state_dir.is_absolute()) << cfg.state_dir;
  EXPECT_EQ(cfg.state_dir.lexically_normal(), (fs::current_path() / "some/dir/state").lexically_normal());
}

TEST(ParseConfig, IdleTimeoutNeverPerSpark) {
  Config cfg = ParseOk(Sparks({Spark("a", "127.0.0.1:2201", kProcess, R"("idle_timeout": "never")")}));
  ASSERT_THAT(cfg.sparks, SizeIs(1));
  EXPECT_TRUE(cfg.sparks[0].idle_timeout.is_never());
  EXPECT_FALSE(cfg.default_idle_timeout.is_never());
}

TEST(ParseConfig, IdleTimeoutNeverInDefaultsIsInherited) {
  Config cfg = ParseOk(R"({"defaults": {"idle_timeout": "never"}, "sparks": [)" + Spark("a", "127.0.0.1:2201") +
                       "," + Spark("b", "127.0.0.1:2202", kProcess, R"("idle_timeout": "1h")") + "]}");
  EXPECT_TRUE(cfg.default_idle_timeout.is_never());
  ASSERT_THAT(cfg.sparks, SizeIs(2));
  EXPECT_TRUE(cfg.sparks[0].idle_timeout.is_never());
  EXPECT_EQ(cfg.sparks[1].idle_timeout, MaybeNever{1h});
}

TEST(ParseConfig, PerSparkWakeTimeoutOverridesDefault) {
  Config cfg = ParseOk(R"({"defaults": {"wake_timeout": "2m"}, "sparks": [)" +
                       Spark("a", "127.0.0.1:2201", kProcess, R"("wake_timeout": "45s")") + "," +
                       Spark("b", "127.0.0.1:2202") + "]}");
  ASSERT_THAT(cfg.sparks, SizeIs(2));
  EXPECT_EQ(cfg.sparks[0].wake_timeout, Duration(45s));
  EXPECT_EQ(cfg.sparks[1].wake_timeout, Duration(2min));
}

TEST(ParseConfig, ProcessStopGraceDefaultAndOverride) {
  Config cfg = ParseOk(
      Sparks({Spark("a", "127.0.0.1:2201"),
              Spark("b", "127.0.0.1:2202",
                    R"("process": {"command": ["/bin/x"], "target": "127.0.0.1:22002", "stop_grace": "3s"})")}));
  ASSERT_THAT(cfg.sparks, SizeIs(2));
  ASSERT_TRUE(std::holds_alternative<ProcessBackendConfig>(cfg.sparks[0].backend));
  ASSERT_TRUE(std::holds_alternative<ProcessBackendConfig>(cfg.sparks[1].backend));
  EXPECT_EQ(std::get<ProcessBackendConfig>(cfg.sparks[0].backend).stop_grace, Duration(10s));
  EXPECT_EQ(std::get<ProcessBackendConfig>(cfg.sparks[1].backend).stop_grace, Duration(3s));
}

TEST(ParseConfig, Ipv6ListenAndTarget) {
  Config cfg = ParseOk(
      Sparks({Spark("v6", "[::1]:2201", R"("process": {"command": ["/bin/x"], "target": "[::1]:22001"})")}));
  ASSERT_THAT(cfg.sparks, SizeIs(1));
  EXPECT_EQ(cfg.sparks[0].listen, (Address{"::1", 2201}));
  EXPECT_EQ(cfg.sparks[0].target(), (Address{"::1", 22001}));
}

TEST(ParseConfig, SparkOrderIsPreserved) {
  Config cfg = ParseOk(
      Sparks({Spark("zeta", "127.0.0.1:2203"), Spark("alpha", "127.0.0.1:2201"), Spark("mid", "127.0.0.1:2202")}));
  ASSERT_THAT(cfg.sparks, SizeIs(3));
  EXPECT_EQ(cfg.sparks[0].name, "zeta");
  EXPECT_EQ(cfg.sparks[1].name, "alpha");
  EXPECT_EQ(cfg.sparks[2].name, "mid");
}

// ===========================================================================
// ConfigError itself
// ===========================================================================

TEST(ConfigErrorTest, KeepsProblemsInOrder) {
  ConfigError e({"state_dir: expected a string", "bogus: unknown key"});
  EXPECT_THAT(e.problems(), ElementsAre("state_dir: expected a string", "bogus: unknown key"));
  const std::runtime_error& base = e;  // usable as a std::runtime_error
  EXPECT_NE(base.what(), nullptr);
}

// ===========================================================================
// Invalid configs: one case per error path
// ===========================================================================

struct BadConfig {
  std::string label;  // test name suffix
  std::string json;
  std::string prefix;  // the problem must start with this (the key path)
  std::string substr;  // ...and contain this
};

void PrintTo(const BadConfig& c, std::ostream* os) { *os << c.label; }

class ParseConfigRejects : public ::testing::TestWithParam<BadConfig> {};

TEST_P(ParseConfigRejects, ReportsProblemAtKeyPath) {
  const BadConfig& c = GetParam();
  std::vector<std::string> problems = Problems(c.json);
  EXPECT_THAT(problems, Contains(Problem(c.prefix, c.substr)))
      << "problems were:" << Join(problems) << "\nconfig:\n"
      << c.json;
}

std::string ParamName(const ::testing::TestParamInfo<BadConfig>& info) { return info.param.label; }

// --- unknown keys ----------------------------------------------------------
INSTANTIATE_TEST_SUITE_P(
    UnknownKeys, ParseConfigRejects,
    ::testing::Values(
        BadConfig{"TopLevel", R"({"bogus": 1})", "bogus: ", "unknown key"},
        BadConfig{"InDefaults", R"({"defaults": {"foo": "1s"}})", "defaults.foo: ", "unknown key"},
        BadConfig{"InReaper", R"({"reaper": {"intervall": "1s"}})", "reaper.intervall: ", "unknown key"},
        BadConfig{"InActivity", R"({"activity": {"flush": "1s"}})", "activity.flush: ", "unknown key"},
        BadConfig{"InSpark", Sparks({Spark("a", "127.0.0.1:2201", kProcess, R"("idel_timeout": "1h")")}),
                  "sparks[0].idel_timeout: ", "unknown key"},
        BadConfig{
            "InProcess",
            Sparks({Spark(
                "a", "127.0.0.1:2201",
                R"("process": {"command": ["/bin/x"], "comand": ["/bin/x"], "target": "127.0.0.1:22001"})")}),
            "sparks[0].process.comand: ", "unknown key"},
        BadConfig{
            "InExec",
            Sparks({Spark(
                "a", "127.0.0.1:2201",
                R"("exec": {"start": ["s"], "stop": ["t"], "target": "127.0.0.1:22001", "restart": ["r"]})")}),
            "sparks[0].exec.restart: ", "unknown key"},
        BadConfig{"InSecondSpark",
                  Sparks({Spark("a", "127.0.0.1:2201"),
                          Spark("b", "127.0.0.1:2202", kProcess, R"("colour": "red")")}),
                  "sparks[1].colour: ", "unknown key"}),
    ParamName);

TEST(ParseConfig, UnknownKeyIsTheOnlyProblem) {
  auto problems = Problems(Sparks({Spark("a", "127.0.0.1:2201", kProcess, R"("idel_timeout": "1h")")}));
  ASSERT_THAT(problems, SizeIs(1)) << Join(problems);
  EXPECT_THAT(problems[0], StartsWith("sparks[0].idel_timeout: unknown key"));
}

// --- wrong types -----------------------------------------------------------
INSTANTIATE_TEST_SUITE_P(
    WrongTypes, ParseConfigRejects,
    ::testing::Values(
        BadConfig{"StateDirNumber", R"({"state_dir": 5})", "state_dir: ", "expected a string"},
        BadConfig{"DefaultsString", R"({"defaults": "2h"})", "defaults: ", "expected an object"},
        BadConfig{"ReaperArray", R"({"reaper": []})", "reaper: ", "expected an object"},
        BadConfig{"ActivityNumber", R"({"activity": 30})", "activity: ", "expected an object"},
        BadConfig{"SparksObject", R"({"sparks": {}})", "sparks: ", "expected an array"},
        BadConfig{"SparkString", R"({"sparks": ["brave-dolphin"]})", "sparks[0]: ", "expected an object"},
        BadConfig{"IdleTimeoutNumber", R"({"defaults": {"idle_timeout": 7200}})",
                  "defaults.idle_timeout: ", "expected a string"},
        BadConfig{"NameNumber",
                  R"({"sparks": [{"name": 5, "listen": "127.0.0.1:2201", )" + std::string(kProcess) + "}]}",
                  "sparks[0].name: ", "expected a string"},
        BadConfig{"ListenNumber", R"({"sparks": [{"name": "a", "listen": 2201, )" + std::string(kProcess) + "}]}",
                  "sparks[0].listen: ", "expected a string"},
        BadConfig{"ProcessArray", Sparks({Spark("a", "127.0.0.1:2201", R"("process": [])")}),
                  "sparks[0].process: ", "expected an object"},
        BadConfig{"ExecString", Sparks({Spark("a", "127.0.0.1:2201", R"("exec": "start.sh")")}),
                  "sparks[0].exec: ", "expected an object"},
        BadConfig{"CommandString",
                  Sparks({Spark("a", "127.0.0.1:2201",
                                R"("process": {"command": "/usr/sbin/sshd -D", "target": "127.0.0.1:22001"})")}),
                  "sparks[0].process.command: ", "expected an array"},
        BadConfig{"CommandMixed",
                  Sparks({Spark("a", "127.0.0.1:2201",
                                R"("process": {"command": ["/usr/sbin/sshd", 5], "target": "127.0.0.1:22001"})")}),
                  "sparks[0].process.command", "string"},
        BadConfig{"ExecStartNumbers",
                  Sparks({Spark("a", "127.0.0.1:2201",
                                R"("exec": {"start": [1, 2], "stop": ["t"], "target": "127.0.0.1:22001"})")}),
                  "sparks[0].exec.start", "string"},
        BadConfig{"TargetNumber",
                  Sparks({Spark("a", "127.0.0.1:2201", R"("process": {"command": ["/bin/x"], "target": 22001})")}),
                  "sparks[0].process.target: ", "expected a string"}),
    ParamName);

TEST(ParseConfig, CommandWithNonStringElementSaysArrayOfStrings) {
  auto problems = Problems(
      Sparks({Spark("a", "127.0.0.1:2201",
                    R"("process": {"command": ["/usr/sbin/sshd", 5], "target": "127.0.0.1:22001"})")}));
  EXPECT_THAT(problems, Contains(Problem("sparks[0].process.command: ", "expected an array of strings")))
      << Join(problems);
}

// --- addresses ---------------------------------------------------------------
INSTANTIATE_TEST_SUITE_P(
    Addresses, ParseConfigRejects,
    ::testing::Values(
        BadConfig{"ListenPortTooBig", Sparks({Spark("a", "127.0.0.1:2201"), Spark("b", "127.0.0.1:99999")}),
                  "sparks[1].listen: ", "not a valid port"},
        BadConfig{"ListenHostname", Sparks({Spark("a", "localhost:2201")}), "sparks[0].listen: ", ""},
        BadConfig{"ListenNoPort", Sparks({Spark("a", "127.0.0.1")}), "sparks[0].listen: ", ""},
        BadConfig{"ListenPortZero", Sparks({Spark("a", "127.0.0.1:0")}), "sparks[0].listen: ", ""},
        BadConfig{"ProcessTargetBad",
                  Sparks({Spark("a", "127.0.0.1:2201",
                                R"("process": {"command": ["/bin/x"], "target": "127.0.0.1:70000"})")}),
                  "sparks[0].process.target: ", "not a valid port"},
        BadConfig{"ExecTargetBad",
                  Sparks({Spark("a", "127.0.0.1:2201",
                                R"("exec": {"start": ["s"], "stop": ["t"], "target": "::1:22"})")}),
                  "sparks[0].exec.target: ", ""}),
    ParamName);

TEST(ParseConfig, BadPortMessageIsExactAndQuoted) {
  auto problems = Problems(Sparks({Spark("a", "127.0.0.1:2201"), Spark("b", "127.0.0.1:99999")}));
  EXPECT_THAT(problems, Contains(Eq(R"(sparks[1].listen: "127.0.0.1:99999" is not a valid port)")))
      << Join(problems);
}

// --- durations ---------------------------------------------------------------
INSTANTIATE_TEST_SUITE_P(
    Durations, ParseConfigRejects,
    ::testing::Values(
        BadConfig{"DefaultIdleGarbage", R"({"defaults": {"idle_timeout": "forever"}})",
                  "defaults.idle_timeout: ", ""},
        BadConfig{"DefaultIdleNoUnit", R"({"defaults": {"idle_timeout": "7200"}})", "defaults.idle_timeout: ", ""},
        BadConfig{"DefaultWakeNever", R"({"defaults": {"wake_timeout": "never"}})", "defaults.wake_timeout: ", ""},
        BadConfig{"DrainNever", R"({"defaults": {"drain_timeout": "never"}})", "defaults.drain_timeout: ", ""},
        BadConfig{"DrainZero", R"({"defaults": {"drain_timeout": "0s"}})",
                  "defaults.drain_timeout: ", "greater than zero"},
        BadConfig{"ReaperNever", R"({"reaper": {"interval": "never"}})", "reaper.interval: ", ""},
        BadConfig{"ReaperFraction", R"({"reaper": {"interval": "1.5s"}})", "reaper.interval: ", ""},
        BadConfig{"FlushNever", R"({"activity": {"flush_interval": "never"}})", "activity.flush_interval: ", ""},
        BadConfig{"FlushUppercase", R"({"activity": {"flush_interval": "30S"}})", "activity.flush_interval: ", ""},
        BadConfig{"SparkWakeFraction",
                  Sparks({Spark("a", "127.0.0.1:2201", kProcess, R"("wake_timeout": "1.5h")")}),
                  "sparks[0].wake_timeout: ", ""},
        BadConfig{"SparkWakeNever", Sparks({Spark("a", "127.0.0.1:2201", kProcess, R"("wake_timeout": "never")")}),
                  "sparks[0].wake_timeout: ", ""},
        BadConfig{"SparkIdleZero", Sparks({Spark("a", "127.0.0.1:2201", kProcess, R"("idle_timeout": "0m")")}),
                  "sparks[0].idle_timeout: ", "greater than zero"},
        BadConfig{
            "StopGraceNever",
            Sparks({Spark(
                "a", "127.0.0.1:2201",
                R"("process": {"command": ["/bin/x"], "target": "127.0.0.1:22001", "stop_grace": "never"})")}),
            "sparks[0].process.stop_grace: ", ""}),
    ParamName);

// --- required keys and empty commands ---------------------------------------
INSTANTIATE_TEST_SUITE_P(
    Required, ParseConfigRejects,
    ::testing::Values(
        BadConfig{"Name", R"({"sparks": [{"listen": "127.0.0.1:2201", )" + std::string(kProcess) + "}]}",
                  "sparks[0].name: ", "is required"},
        BadConfig{"Listen", R"({"sparks": [{"name": "a", )" + std::string(kProcess) + "}]}",
                  "sparks[0].listen: ", "is required"},
        BadConfig{"ProcessTarget", Sparks({Spark("a", "127.0.0.1:2201", R"("process": {"command": ["/bin/x"]})")}),
                  "sparks[0].process.target: ", "is required"},
        BadConfig{"ProcessCommand",
                  Sparks({Spark("a", "127.0.0.1:2201", R"("process": {"target": "127.0.0.1:22001"})")}),
                  "sparks[0].process.command: ", "is required"},
        BadConfig{"ExecStart",
                  Sparks({Spark("a", "127.0.0.1:2201",
                                R"("exec": {"stop": ["t"], "target": "127.0.0.1:22001"})")}),
                  "sparks[0].exec.start: ", "is required"},
        BadConfig{"ExecStop",
                  Sparks({Spark("a", "127.0.0.1:2201",
                                R"("exec": {"start": ["s"], "target": "127.0.0.1:22001"})")}),
                  "sparks[0].exec.stop: ", "is required"},
        BadConfig{"ExecTarget",
                  Sparks({Spark("a", "127.0.0.1:2201", R"("exec": {"start": ["s"], "stop": ["t"]})")}),
                  "sparks[0].exec.target: ", "is required"},
        BadConfig{"EmptyCommand",
                  Sparks({Spark("a", "127.0.0.1:2201",
                                R"("process": {"command": [], "target": "127.0.0.1:22001"})")}),
                  "sparks[0].process.command: ", "must not be empty"},
        BadConfig{"EmptyExecStart",
                  Sparks({Spark("a", "127.0.0.1:2201",
                                R"("exec": {"start": [], "stop": ["t"], "target": "127.0.0.1:22001"})")}),
                  "sparks[0].exec.start: ", "must not be empty"}),
    ParamName);

TEST(ParseConfig, EmptyCommandIsReportedOnce) {
  auto problems = Problems(
      Sparks({Spark("a", "127.0.0.1:2201", R"("process": {"command": [], "target": "127.0.0.1:22001"})")}));
  ASSERT_THAT(problems, SizeIs(1)) << Join(problems);
  EXPECT_THAT(problems[0], StartsWith("sparks[0].process.command: must not be empty"));
}

TEST(ParseConfig, MissingNameAndListenAreBothReported) {
  auto problems = Problems(R"({"sparks": [{)" + std::string(kProcess) + "}]}");
  EXPECT_THAT(problems, Contains(StartsWith("sparks[0].name: is required"))) << Join(problems);
  EXPECT_THAT(problems, Contains(StartsWith("sparks[0].listen: is required"))) << Join(problems);
}

// --- names, uniqueness, backend choice --------------------------------------
INSTANTIATE_TEST_SUITE_P(
    Names, ParseConfigRejects,
    ::testing::Values(
        BadConfig{"Uppercase", Sparks({Spark("Brave", "127.0.0.1:2201")}), "sparks[0].name: ", "RFC 1123"},
        BadConfig{"PathTraversal", Sparks({Spark("../x", "127.0.0.1:2201")}), "sparks[0].name: ", "RFC 1123"},
        BadConfig{"Empty", Sparks({Spark("", "127.0.0.1:2201")}), "sparks[0].name: ", "RFC 1123"},
        BadConfig{"TrailingDash", Sparks({Spark("a", "127.0.0.1:2201"), Spark("b-", "127.0.0.1:2202")}),
                  "sparks[1].name: ", "RFC 1123"},
        BadConfig{"TooLong", Sparks({Spark(std::string(64, 'a'), "127.0.0.1:2201")}),
                  "sparks[0].name: ", "RFC 1123"},
        BadConfig{"DuplicateName", Sparks({Spark("a", "127.0.0.1:2201"), Spark("a", "127.0.0.1:2202")}),
                  "sparks[1].name: ", "already used by sparks[0]"},
        BadConfig{"DuplicateNameLater",
                  Sparks({Spark("a", "127.0.0.1:2201"), Spark("b", "127.0.0.1:2202"),
                          Spark("b", "127.0.0.1:2203")}),
                  "sparks[2].name: ", "already used by sparks[1]"},
        BadConfig{"DuplicateListen", Sparks({Spark("a", "127.0.0.1:2201"), Spark("b", "127.0.0.1:2201")}),
                  "sparks[1].listen: ", "already used by sparks[0]"},
        BadConfig{"BothBackends",
                  Sparks({Spark("a", "127.0.0.1:2201",
                                std::string(kProcess) +
                                    R"(, "exec": {"start": ["s"], "stop": ["t"], "target": "127.0.0.1:22001"})")}),
                  "sparks[0]: ", "exactly one backend"},
        BadConfig{"NoBackend", R"({"sparks": [{"name": "a", "listen": "127.0.0.1:2201"}]})",
                  "sparks[0]: ", "exactly one backend"}),
    ParamName);

TEST(ParseConfig, DuplicateNameIsReportedOnlyOnTheLaterSpark) {
  auto problems = Problems(Sparks({Spark("a", "127.0.0.1:2201"), Spark("a", "127.0.0.1:2202")}));
  EXPECT_THAT(problems, Not(Contains(StartsWith("sparks[0]")))) << Join(problems);
}

// --- document-level problems -------------------------------------------------
TEST(ParseConfig, InvalidJsonIsASingleProblem) {
  for (const char* text : {"", "{", R"({"state_dir": })", "{'a': 1}", R"({"a": 1,})", "nonsense"}) {
    SCOPED_TRACE(text);
    auto problems = Problems(text);
    ASSERT_THAT(problems, SizeIs(1)) << Join(problems);
    EXPECT_THAT(problems[0], HasSubstr("invalid JSON"));
  }
}

TEST(ParseConfig, TopLevelMustBeAnObject) {
  for (const char* text : {"[]", "42", R"("gateway")", "null", "true"}) {
    SCOPED_TRACE(text);
    auto problems = Problems(text);
    EXPECT_THAT(problems, Contains(HasSubstr("expected an object"))) << Join(problems);
  }
}

TEST(ParseConfig, ReportsEveryProblemInOneFile) {
  auto problems = Problems(
      Sparks({Spark("a", "127.0.0.1:99999"), Spark("b", "127.0.0.1:2202", kProcess, R"("idel_timeout": "1h")")}));
  EXPECT_THAT(problems, SizeIs(::testing::Ge(2u))) << Join(problems);
  EXPECT_THAT(problems, Contains(Problem("sparks[0].listen: ", "not a valid port"))) << Join(problems);
  EXPECT_THAT(problems, Contains(StartsWith("sparks[1].idel_timeout: unknown key"))) << Join(problems);
}

TEST(ParseConfig, ReportsProblemsAcrossSectionsAndSparks) {
  auto problems = Problems(R"({
    "state_dir": 1,
    "defaults": {"idle_timeout": "soon", "foo": 1},
    "bogus": true,
    "sparks": [
      {"name": "Bad_Name", "listen": "127.0.0.1:2201"},
      {"name": "ok", "listen": "localhost:22",
       "process": {"command": [], "target": "127.0.0.1:22001"}}
    ]
  })");
  EXPECT_THAT(problems, Contains(Problem("state_dir: ", "expected a string")));
  EXPECT_THAT(problems, Contains(StartsWith("defaults.idle_timeout: ")));
  EXPECT_THAT(problems, Contains(Problem("defaults.foo: ", "unknown key")));
  EXPECT_THAT(problems, Contains(Problem("bogus: ", "unknown key")));
  EXPECT_THAT(problems, Contains(Problem("sparks[0].name: ", "RFC 1123")));
  EXPECT_THAT(problems, Contains(Problem("sparks[0]: ", "exactly one backend")));
  EXPECT_THAT(problems, Contains(StartsWith("sparks[1].listen: ")));
  EXPECT_THAT(problems, Contains(Problem("sparks[1].process.command: ", "must not be empty")));
  EXPECT_THAT(problems, SizeIs(::testing::Ge(8u))) << Join(problems);
}

TEST(ParseConfig, MisspelledCommandIsUnknownAndCommandIsMissing) {
  auto problems = Problems(
      Sparks({Spark("a", "127.0.0.1:2201",
                    R"("process": {"comand": ["/usr/sbin/sshd"], "target": "127.0.0.1:22001"})")}));
  EXPECT_THAT(problems, Contains(StartsWith("sparks[0].process.comand: unknown key"))) << Join(problems);
  EXPECT_THAT(problems, Contains(StartsWith("sparks[0].process.command: is required"))) << Join(problems);
}

TEST(ParseConfig, EveryProblemHasKeyPathPrefix) {
  auto problems = Problems(R"({"bogus": 1, "defaults": {"wake_timeout": "never"},
                               "sparks": [{"name": "a"}]})");
  for (const auto& p : problems) {
    SCOPED_TRACE(p);
    auto colon = p.find(": ");
    ASSERT_NE(colon, std::string::npos) << "not formatted as \"<key path>: <reason>\"";
    EXPECT_GT(colon, 0u);
    EXPECT_GT(p.size(), colon + 2) << "empty reason";
  }
}

// ===========================================================================
// Who wakes a spark (issue 19): wake_on, wake_grace, proxy_protocol, trusted_proxies

TEST(ParseConfig, ClientRulesDefaultToWakeOnDataWithOneSecondGraceAndNoProxyProtocol) {
  Config cfg = ParseOk(Sparks({Spark("a", "127.0.0.1:2201")}));
  EXPECT_EQ(cfg.default_clients.wake_on, WakeOn::data);
  EXPECT_EQ(cfg.default_clients.wake_grace, Duration(1s));
  EXPECT_EQ(cfg.default_clients.proxy_protocol, ProxyProtocol::off);
  EXPECT_EQ(cfg.sparks[0].clients, cfg.default_clients);
  EXPECT_TRUE(cfg.trusted_proxies.empty());
}

TEST(ParseConfig, ClientRulesAreInheritedFromDefaultsAndOverriddenPerSpark) {
  Config cfg = ParseOk(
      R"({"trusted_proxies": ["10.42.0.0/16", "127.0.0.1"],
    "defaults": {"wake_on": "connect", "wake_grace": "3s", "proxy_protocol": "optional"},
    "sparks": [)" +
      Spark("a", "127.0.0.1:2201") + ", " +
      Spark("b", "127.0.0.1:2202", kProcess, R"("wake_on": "data", "proxy_protocol": "required")") + "]}");
  EXPECT_EQ(cfg.sparks[0].clients.wake_on, WakeOn::connect);
  EXPECT_EQ(cfg.sparks[0].clients.wake_grace, Duration(3s));
  EXPECT_EQ(cfg.sparks[0].clients.proxy_protocol, ProxyProtocol::optional);
  EXPECT_EQ(cfg.sparks[1].clients.wake_on, WakeOn::data);
  EXPECT_EQ(cfg.sparks[1].clients.wake_grace, Duration(3s));
  EXPECT_EQ(cfg.sparks[1].clients.proxy_protocol, ProxyProtocol::required);
  ASSERT_THAT(cfg.trusted_proxies, SizeIs(2));
  EXPECT_EQ(cfg.trusted_proxies[0].to_string(), "10.42.0.0/16");
  EXPECT_EQ(cfg.trusted_proxies[1].to_string(), "127.0.0.1/32");
}

TEST(ParseConfig, BadClientRulesAreProblemsNamingTheKeys) {
  auto problems = Problems(R"({"defaults": {"wake_on": "syn", "wake_grace": "2m"},
    "trusted_proxies": ["10.42.1.0/16", "bogus", 7],
    "sparks": [)" + Spark("a", "127.0.0.1:2201", kProcess, R"("proxy_protocol": "v2")") +
                           "]}");
  EXPECT_THAT(problems, Contains(Problem("defaults.wake_on", "\"syn\" is not one of")));
  EXPECT_THAT(problems, Contains(Problem("defaults.wake_grace", "at most 1m")));
  EXPECT_THAT(problems, Contains(Problem("trusted_proxies[0]", "did you mean 10.42.0.0/16?")));
  EXPECT_THAT(problems, Contains(Problem("trusted_proxies[1]", "is not an address block")));
  EXPECT_THAT(problems, Contains(Problem("trusted_proxies[2]", "expected a string")));
  EXPECT_THAT(problems, Contains(Problem("sparks[0].proxy_protocol", "\"v2\" is not one of")));
}

TEST(ParseConfig, ProxyProtocolWithoutTrustedProxiesIsAProblem) {
  EXPECT_THAT(Problems(R"({"defaults": {"proxy_protocol": "required"}})"),
              Contains(Problem("defaults.proxy_protocol", "needs trusted_proxies")));
  EXPECT_THAT(Problems(Sparks({Spark("a", "127.0.0.1:2201", kProcess, R"("proxy_protocol": "optional")")})),
              Contains(Problem("sparks[0].proxy_protocol", "needs trusted_proxies")));
  EXPECT_THAT(Problems(R"({"jump": {"listen": "127.0.0.1:2222", "authorized_keys": "keys",
                                   "proxy_protocol": "required"}})"),
              Contains(Problem("jump.proxy_protocol", "needs trusted_proxies")));
}

TEST(ParseConfig, TheJumpHostTakesProxyProtocolAndACopyOfTrustedProxies) {
  Config off = ParseOk(R"({"jump": {"listen": "127.0.0.1:2222", "authorized_keys": "keys"}})");
  ASSERT_TRUE(off.jump);
  EXPECT_EQ(off.jump->proxy_protocol, ProxyProtocol::off);
  Config on = ParseOk(R"({"trusted_proxies": ["10.42.0.0/16"], "defaults": {"proxy_protocol": "required"},
    "jump": {"listen": "127.0.0.1:2222", "authorized_keys": "keys", "proxy_protocol": "optional"}})");
  ASSERT_TRUE(on.jump);
  EXPECT_EQ(on.jump->proxy_protocol, ProxyProtocol::optional);  // its own, not the sparks' defaults
  ASSERT_THAT(on.jump->trusted_proxies, SizeIs(1));
  EXPECT_EQ(on.jump->trusted_proxies[0].to_string(), "10.42.0.0/16");
  EXPECT_THAT(Problems(R"({"trusted_proxies": ["10.42.0.0/16"],
    "jump": {"listen": "127.0.0.1:2222", "authorized_keys": "keys", "proxy_protocol": "yes"}})"),
              Contains(Problem("jump.proxy_protocol", "\"yes\" is not one of")));
}

// Dev ports (issue 20): "ports" beside SSH, port_grace
// ===========================================================================

TEST(ParseConfig, DevPortsAreReadWithTheirGrace) {
  Config cfg = ParseOk(R"({"defaults": {"port_grace": "10s"}, "sparks": [)" +
                       Spark("a", "127.0.0.1:2201", kProcess,
                             R"("ports": [{"name": "web", "listen": "127.0.0.1:2301", "port": 3000},
                                          {"name": "8080", "listen": "127.0.0.1:2302", "port": 8080}])") +
                       ", " + Spark("b", "127.0.0.1:2202", kProcess, R"("port_grace": "1m")") + "]}");
  ASSERT_THAT(cfg.sparks, SizeIs(2));
  ASSERT_THAT(cfg.sparks[0].ports, SizeIs(2));
  EXPECT_EQ(cfg.sparks[0].ports[0].name, "web");
  EXPECT_EQ(cfg.sparks[0].ports[0].listen.to_string(), "127.0.0.1:2301");
  EXPECT_EQ(cfg.sparks[0].ports[0].port, 3000);
  EXPECT_EQ(cfg.sparks[0].ports[1].name, "8080");
  EXPECT_EQ(cfg.sparks[0].port_grace, Duration(10s));  // from defaults
  EXPECT_TRUE(cfg.sparks[1].ports.empty());
  EXPECT_EQ(cfg.sparks[1].port_grace, Duration(1min));
  EXPECT_EQ(ParseOk(Sparks({Spark("c", "127.0.0.1:2203")})).sparks[0].port_grace, Duration(30s));
}

TEST(ParseConfig, BadDevPortsAreProblemsNamingThePath) {
  const auto problems = Problems(
      Sparks({Spark("a", "127.0.0.1:2201", kProcess,
                    R"("ports": [{"name": "ssh", "listen": "127.0.0.1:2301", "port": 3000},
                          {"name": "web", "listen": "127.0.0.1:2302", "port": 3000},
                          {"name": "web", "listen": "127.0.0.1:2303", "port": 3001},
                          {"name": "Web!", "listen": "127.0.0.1:2304", "port": 3002},
                          {"name": "api", "listen": "127.0.0.1:2201", "port": 3003},
                          {"name": "x", "listen": "127.0.0.1:2305"},
                          {"name": "y", "listen": "127.0.0.1:2306", "port": 70000, "path": "/"},
                          7])")}));
  EXPECT_THAT(problems, Contains(Problem("sparks[0].ports[0].name", "\"ssh\" is already the SSH port")));
  EXPECT_THAT(problems, Contains(Problem("sparks[0].ports[1].port", "3000 is already sparks[0].ports[0]")));
  EXPECT_THAT(problems, Contains(Problem("sparks[0].ports[2].name", "\"web\" is already sparks[0].ports[1]")));
  EXPECT_THAT(problems, Contains(Problem("sparks[0].ports[3].name", "is not a valid port name")));
  EXPECT_THAT(problems, Contains(Problem("sparks[0].ports[4].listen", "is already used by sparks[0]")));
  EXPECT_THAT(problems, Contains(Problem("sparks[0].ports[5].port", "missing")));
  EXPECT_THAT(problems, Contains(Problem("sparks[0].ports[6].port", "from 1 to 65535")));
  EXPECT_THAT(problems, Contains(Problem("sparks[0].ports[6].path", "")));
  EXPECT_THAT(problems, Contains(Problem("sparks[0].ports[7]", "expected an object")));
  EXPECT_THAT(Problems(Sparks({Spark("a", "127.0.0.1:2201", kProcess, R"("ports": {"web": 3000})")})),
              Contains(Problem("sparks[0].ports", "expected an array")));
}

TEST(ParseConfig, ADevPortCannotBeTheSshPort) {
  EXPECT_THAT(Problems(
                  Sparks({Spark("a", "127.0.0.1:2201", kProcess,
                                R"("ports": [{"name": "web", "listen": "127.0.0.1:2301", "port": 22001}])")})),
              Contains(Problem("sparks[0].ports[0].port", "22001 is the spark's SSH port")));
}

TEST(ParseConfig, ADevPortsListenAddressIsUniqueAcrossSparks) {
  EXPECT_THAT(Problems(Sparks({Spark("a", "127.0.0.1:2201", kProcess,
                                     R"("ports": [{"name": "web", "listen": "127.0.0.1:2202", "port": 3000}])"),
                               Spark("b", "127.0.0.1:2202")})),
              Contains(Problem("sparks[1].listen", "is already used by sparks[0].ports[0]")));
}

// keepalive (docs/dead-peers.md)
// ===========================================================================

TEST(ParseKeepalive, BuiltInDefaultsFindADeadPeerInTwoMinutes) {
  Config cfg = ParseOk(Sparks({Spark("a", "127.0.0.1:2201")}));
  const TcpKeepalive expected{true, 60s, 10s, 6};
  EXPECT_EQ(cfg.default_keepalive, expected);
  ASSERT_THAT(cfg.sparks, SizeIs(1));
  EXPECT_EQ(cfg.sparks[0].keepalive, expected);
  EXPECT_EQ(cfg.sparks[0].keepalive.bound(), Duration(2min));
}

TEST(ParseKeepalive, DefaultsApplyToSparksWithoutTheirOwn) {
  Config cfg = ParseOk(R"({"defaults": {"keepalive": {"idle": "30s", "interval": "5s", "count": 3}},
                           "sparks": [)" +
                       Spark("a", "127.0.0.1:2201") + "]}");
  const TcpKeepalive expected{true, 30s, 5s, 3};
  EXPECT_EQ(cfg.default_keepalive, expected);
  ASSERT_THAT(cfg.sparks, SizeIs(1));
  EXPECT_EQ(cfg.sparks[0].keepalive, expected);
  EXPECT_EQ(cfg.sparks[0].keepalive.bound(), Duration(45s));
}

TEST(ParseKeepalive, KeysLeftOutComeFromTheLevelAbove) {
  Config cfg = ParseOk(R"({"defaults": {"keepalive": {"interval": "5s"}}, "sparks": [)" +
                       Spark("a", "127.0.0.1:2201", kProcess, R"("keepalive": {"count": 2})") + "]}");
  EXPECT_EQ(cfg.default_keepalive, (TcpKeepalive{true, 60s, 5s, 6}));
  ASSERT_THAT(cfg.sparks, SizeIs(1));
  EXPECT_EQ(cfg.sparks[0].keepalive, (TcpKeepalive{true, 60s, 5s, 2}));
}

TEST(ParseKeepalive, OffPerSparkOrInDefaults) {
  Config cfg = ParseOk(
      Sparks({Spark("a", "127.0.0.1:2201", kProcess, R"("keepalive": "off")"), Spark("b", "127.0.0.1:2202")}));
  ASSERT_THAT(cfg.sparks, SizeIs(2));
  EXPECT_FALSE(cfg.sparks[0].keepalive.enabled);
  EXPECT_TRUE(cfg.sparks[1].keepalive.enabled);

  Config off = ParseOk(R"({"defaults": {"keepalive": "off"}, "sparks": [)" + Spark("a", "127.0.0.1:2201") + "]}");
  EXPECT_FALSE(off.default_keepalive.enabled);
  ASSERT_THAT(off.sparks, SizeIs(1));
  EXPECT_FALSE(off.sparks[0].keepalive.enabled);
}

TEST(ParseKeepalive, ASparkTurnsItBackOnWhereDefaultsHaveItOff) {
  Config cfg = ParseOk(R"({"defaults": {"keepalive": "off"}, "sparks": [)" +
                       Spark("a", "127.0.0.1:2201", kProcess, R"("keepalive": "on")") + "," +
                       Spark("b", "127.0.0.1:2202", kProcess, R"("keepalive": {"idle": "5s"})") + "]}");
  ASSERT_THAT(cfg.sparks, SizeIs(2));
  EXPECT_EQ(cfg.sparks[0].keepalive, (TcpKeepalive{true, 60s, 10s, 6}));
  EXPECT_EQ(cfg.sparks[1].keepalive, (TcpKeepalive{true, 5s, 10s, 6}));
}

TEST(ParseKeepalive, JumpHostTakesTheDefaults) {
  Config cfg = ParseOk(R"({"defaults": {"keepalive": {"idle": "20s"}},
                           "jump": {"listen": "127.0.0.1:2222", "authorized_keys": "keys"}})");
  ASSERT_TRUE(cfg.jump.has_value());
  EXPECT_EQ(cfg.jump->keepalive, (TcpKeepalive{true, 20s, 10s, 6}));
}

TEST(ParseKeepalive, KernelLimitsAreAccepted) {
  Config cfg = ParseOk(Sparks(
      {Spark("a", "127.0.0.1:2201", kProcess, R"("keepalive": {"idle": "1s", "interval": "1s", "count": 1})"),
       Spark("b", "127.0.0.1:2202", kProcess,
             R"("keepalive": {"idle": "32767s", "interval": "1h", "count": 127})")}));
  ASSERT_THAT(cfg.sparks, SizeIs(2));
  EXPECT_EQ(cfg.sparks[0].keepalive.bound(), Duration(2s));
  EXPECT_EQ(cfg.sparks[1].keepalive, (TcpKeepalive{true, 32767s, 1h, 127}));
}

INSTANTIATE_TEST_SUITE_P(
    Keepalive, ParseConfigRejects,
    ::testing::Values(
        BadConfig{"NotAnObjectOrOff", R"({"defaults": {"keepalive": "yes"}})",
                  "defaults.keepalive: ", R"(expected "off", "on" or an object)"},
        BadConfig{"ABoolean", Sparks({Spark("a", "127.0.0.1:2201", kProcess, R"("keepalive": true)")}),
                  "sparks[0].keepalive: ", R"(expected "off", "on" or an object)"},
        BadConfig{"UnknownKey", R"({"defaults": {"keepalive": {"idel": "60s"}}})",
                  "defaults.keepalive.idel: ", "unknown key"},
        BadConfig{"IdleNotADuration", R"({"defaults": {"keepalive": {"idle": "soon"}}})",
                  "defaults.keepalive.idle: ", "soon"},
        BadConfig{"IdleZero", R"({"defaults": {"keepalive": {"idle": "0s"}}})", "defaults.keepalive.idle: ", ""},
        BadConfig{"IdleNever", R"({"defaults": {"keepalive": {"idle": "never"}}})",
                  "defaults.keepalive.idle: ", "only allowed for idle_timeout"},
        BadConfig{"IdleNotWholeSeconds",
                  Sparks({Spark("a", "127.0.0.1:2201", kProcess, R"("keepalive": {"idle": "1500ms"})")}),
                  "sparks[0].keepalive.idle: ", "is not whole seconds"},
        BadConfig{"IntervalNotWholeSeconds", R"({"defaults": {"keepalive": {"interval": "500ms"}}})",
                  "defaults.keepalive.interval: ", "is not whole seconds"},
        BadConfig{"IdleBeyondTheKernel", R"({"defaults": {"keepalive": {"idle": "10h"}}})",
                  "defaults.keepalive.idle: ", "longer than the kernel allows (32767s"},
        BadConfig{"IntervalBeyondTheKernel", R"({"defaults": {"keepalive": {"interval": "1d"}}})",
                  "defaults.keepalive.interval: ", "longer than the kernel allows"},
        BadConfig{"CountZero", R"({"defaults": {"keepalive": {"count": 0}}})",
                  "defaults.keepalive.count: ", "expected a whole number from 1 to 127"},
        BadConfig{"CountTooMany", R"({"defaults": {"keepalive": {"count": 128}}})",
                  "defaults.keepalive.count: ", "expected a whole number from 1 to 127"},
        BadConfig{"CountAString", R"({"defaults": {"keepalive": {"count": "6"}}})",
                  "defaults.keepalive.count: ", "expected a whole number"},
        BadConfig{"BoundBeyondUserTimeout",
                  Sparks({Spark("a", "127.0.0.1:2201", kProcess,
                                R"("keepalive": {"idle": "9h", "interval": "9h", "count": 127})")}),
                  "sparks[0].keepalive: ", "must stay under 24 days"}),
    ParamName);

TEST(ParseKeepalive, EveryBadKeyIsReportedAndTheSparkIsDropped) {
  auto problems = Problems(Sparks({Spark("a", "127.0.0.1:2201", kProcess,
                                         R"("keepalive": {"idle": "1500ms", "interval": "0s", "count": 200})")}));
  EXPECT_THAT(problems, Contains(StartsWith("sparks[0].keepalive.idle: ")));
  EXPECT_THAT(problems, Contains(StartsWith("sparks[0].keepalive.interval: ")));
  EXPECT_THAT(problems, Contains(StartsWith("sparks[0].keepalive.count: ")));
}

// ===========================================================================
// load_config
// ===========================================================================

class LoadConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           ("spark_config_test_" + std::string(info->name()) + "_" +
            std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path Write(const std::string& name, const std::string& text) {
    fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p;
  }
  fs::path dir_;
};

TEST_F(LoadConfigTest, LoadsFileAndResolvesRelativeToItsDirectory) {
  fs::path file = Write("gateway.json", kSpecExample);
  Config cfg;
  try {
    cfg = load_config(file);
  } catch (const ConfigError& e) {
    FAIL() << "unexpected ConfigError:" << Join(e.problems());
  }
  EXPECT_EQ(fs::weakly_canonical(cfg.source), fs::weakly_canonical(file));
  EXPECT_EQ(fs::weakly_canonical(cfg.base_dir), fs::weakly_canonical(dir_));
  EXPECT_EQ(fs::weakly_canonical(cfg.state_dir), fs::weakly_canonical(dir_ / "state"));
  EXPECT_TRUE(cfg.state_dir.is_absolute());
  ASSERT_THAT(cfg.sparks, SizeIs(2));
  EXPECT_NE(cfg.find_spark("brave-dolphin"), nullptr);
  EXPECT_NE(cfg.find_spark("calm-otter"), nullptr);
}

TEST_F(LoadConfigTest, MatchesParseConfigOfSameText) {
  fs::path file = Write("gateway.json", kSpecExample);
  Config loaded = load_config(file);
  Config parsed = parse_config(kSpecExample, loaded.source);
  EXPECT_EQ(loaded.sparks, parsed.sparks);
  EXPECT_EQ(loaded.state_dir, parsed.state_dir);
}

TEST_F(LoadConfigTest, NonexistentFileIsConfigErrorCannotRead) {
  fs::path missing = dir_ / "does-not-exist.json";
  try {
    load_config(missing);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.problems(), Contains(HasSubstr("cannot read"))) << Join(e.problems());
  }
}

TEST_F(LoadConfigTest, DirectoryIsConfigError) { EXPECT_THROW(load_config(dir_), ConfigError); }

TEST_F(LoadConfigTest, InvalidFileContentsAreReported) {
  fs::path file = Write("bad.json", R"({"sparks": [{"name": "a", "listen": "127.0.0.1:0"}]})");
  try {
    load_config(file);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.problems(), Contains(StartsWith("sparks[0].listen: "))) << Join(e.problems());
    EXPECT_THAT(e.problems(), Contains(Problem("sparks[0]: ", "exactly one backend")));
  }
}

}  // namespace
}  // namespace spark::config
