#include "gateway/cli/admin_cli.hpp"

#include <httplib.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <string_view>

#include <nlohmann/json.hpp>

#include "activity/time_format.hpp"
#include "config/duration.hpp"
#include "config/spark_name.hpp"
#include "gateway/exit_codes.hpp"

namespace spark::gateway {
namespace {

using nlohmann::json;

constexpr const char* kDefaultAdmin = "http://127.0.0.1:9090";

struct Options {
  std::string admin;
  std::string token;
  bool json_output = false;
  bool wait = false;
  bool force = false;
  bool clear = false;
  std::vector<std::string> positional;
};

int usage(const std::string& message) {
  std::cerr << "spark-gateway: " << message << "\n\n" << admin_commands_usage();
  return exit_code::usage;
}

std::optional<std::string> read_token_file(const std::string& path, std::string& error) {
  std::ifstream in(path);
  if (!in) {
    error = "cannot read token file " + path;
    return std::nullopt;
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string token = text.str();
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  return token;
}

// Parses flags shared by every command; returns an exit code on a usage error.
std::optional<int> parse(const std::vector<std::string>& args, Options& o) {
  std::string token_file;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string& into) {
      if (i + 1 >= args.size()) return false;
      into = args[++i];
      return true;
    };
    if (a == "--admin") {
      if (!value(o.admin)) return usage("--admin needs a URL");
    } else if (a.rfind("--admin=", 0) == 0) {
      o.admin = a.substr(8);
    } else if (a == "--token-file") {
      if (!value(token_file)) return usage("--token-file needs a FILE");
    } else if (a.rfind("--token-file=", 0) == 0) {
      token_file = a.substr(13);
    } else if (a == "-o" || a == "--output") {
      std::string format;
      if (!value(format)) return usage(a + " needs a format (json or table)");
      if (format != "json" && format != "table") return usage("unknown output format \"" + format + "\"");
      o.json_output = format == "json";
    } else if (a == "-o=json" || a == "--output=json") {
      o.json_output = true;
    } else if (a == "--wait") {
      o.wait = true;
    } else if (a == "--force") {
      o.force = true;
    } else if (a == "--clear") {
      o.clear = true;
    } else if (a.size() > 1 && a[0] == '-') {
      return usage("unknown option " + a);
    } else {
      o.positional.push_back(a);
    }
  }
  if (o.admin.empty()) {
    const char* env = std::getenv("SPARK_GATEWAY_ADMIN");
    o.admin = env && *env ? env : kDefaultAdmin;
  }
  if (!token_file.empty()) {
    std::string error;
    auto token = read_token_file(token_file, error);
    if (!token) {
      std::cerr << "spark-gateway: " << error << "\n";
      return exit_code::usage;
    }
    o.token = *token;
  } else if (const char* env = std::getenv("SPARK_GATEWAY_TOKEN"); env && *env) {
    o.token = env;
  }
  return std::nullopt;
}

// One API call. Prints why it failed and returns nullopt, or returns the decoded body.
std::optional<json> call(const Options& o, const std::string& method, const std::string& path,
                         const std::string& body = {}) {
  httplib::Client client(o.admin);
  if (!client.is_valid()) {
    std::cerr << "spark-gateway: \"" << o.admin << "\" is not a valid admin URL (e.g. " << kDefaultAdmin << ")\n";
    return std::nullopt;
  }
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(o.wait ? 900 : 30, 0);  // --wait lasts as long as the wake may
  httplib::Headers headers;
  if (!o.token.empty()) headers.emplace("Authorization", "Bearer " + o.token);
  httplib::Result res = method == "GET"      ? client.Get(path, headers)
                        : method == "DELETE" ? client.Delete(path, headers)
                                             : client.Post(path, headers, body, "application/json");
  if (!res) {
    std::cerr << "spark-gateway: cannot reach the admin API at " << o.admin << ": "
              << httplib::to_string(res.error()) << "\n";
    return std::nullopt;
  }
  const json decoded = json::parse(res->body, nullptr, false);
  if (res->status >= 400) {
    std::string message = decoded.is_object() && decoded.contains("error") && decoded["error"].is_string()
                              ? decoded["error"].get<std::string>()
                              : res->body;
    const std::string spark = decoded.is_object() && decoded.contains("spark") && decoded["spark"].is_string()
                                  ? decoded["spark"].get<std::string>() + ": "
                                  : "";
    std::cerr << "spark-gateway: " << spark << message << " (HTTP " << res->status << ")\n";
    return std::nullopt;
  }
  if (decoded.is_discarded()) {
    std::cerr << "spark-gateway: the admin API answered something that is not JSON\n";
    return std::nullopt;
  }
  return decoded;
}

std::string human_seconds(double seconds) {
  if (seconds < 0) seconds = 0;
  return config::format_duration(std::chrono::seconds(std::llround(seconds)));
}

double seconds_until(const json& rfc3339, activity::TimePoint now) {
  const auto t = activity::parse_rfc3339(rfc3339.get<std::string>());
  return t ? std::chrono::duration<double>(*t - now).count() : 0;
}

// Columns padded to their widest cell, two spaces apart; the first row is the header.
void print_rows(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(rows[0].size(), 0);
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  for (const auto& r : rows) {
    for (std::size_t i = 0; i < r.size(); ++i) {
      std::cout << r[i];
      if (i + 1 < r.size()) std::cout << std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::cout << "\n";
  }
}

void print_table(const json& sparks) {
  const auto now = std::chrono::system_clock::now();
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "STATE", "CONNECTIONS", "IDLE FOR", "SLEEPS IN", "KEEP-AWAKE", "TURNED AWAY", "AWAKE 24H"}};
  for (const auto& s : sparks) {
    const int open = s.value("open_connections", 0);
    std::string idle = open > 0                         ? "active"
                       : s["last_activity"].is_string() ? human_seconds(-seconds_until(s["last_activity"], now))
                                                        : "never used";  // no activity recorded yet
    std::string sleeps_in = s["sleeps_at"].is_null() ? "-" : human_seconds(seconds_until(s["sleeps_at"], now));
    if (s["idle_timeout_seconds"].is_null() && s["state"] == "running") sleeps_in = "never";
    std::string keep = s["keep_awake_until"].is_null()
                           ? "-"
                           : human_seconds(seconds_until(s["keep_awake_until"], now)) + " left";
    // Connections closed before waking it: bare connects, port scans, health checks, not SSH.
    const auto turned_away = std::to_string(s.value("turned_away", 0));
    // Not asleep over the last day, from the spark's history (it outlives restarts).
    const auto awake_24h = human_seconds(s.value("awake_24h_seconds", 0.0));
    rows.push_back({s["name"].get<std::string>(), s["state"].get<std::string>(), std::to_string(open), idle,
                    sleeps_in, keep, turned_away, awake_24h});
  }
  print_rows(rows);
}

// `status NAME`'s picture of the last day: 48 half-hour cells, the last one holding now.
constexpr int kCells = 48;
constexpr std::chrono::minutes kCell{30};

// The API's member `key` of `j`, or an empty one (an answer without it, e.g. an older gateway's).
const json& member(const json& j, const char* key) {
  static const json kNone;
  if (!j.is_object()) return kNone;
  const auto it = j.find(key);
  return it == j.end() ? kNone : *it;
}

// Half-open [from, to) times of the API's JSON; an ongoing one ("to": null) ends at `now`.
struct Stretch {
  activity::TimePoint from{};
  activity::TimePoint to{};
};
std::optional<Stretch> stretch(const json& j, activity::TimePoint now) {
  const auto& from_text = member(j, "from");
  const auto& to_text = member(j, "to");
  const auto from = from_text.is_string() ? activity::parse_rfc3339(from_text.get<std::string>()) : std::nullopt;
  const auto to = to_text.is_string() ? activity::parse_rfc3339(to_text.get<std::string>()) : now;
  if (!from || !to) return std::nullopt;
  return Stretch{*from, *to};
}

std::string percent(const json& share) {
  if (!share.is_number()) return "-";
  return std::to_string(std::lround(share.get<double>() * 100)) + "%";
}

// The day as cells, and a wake mark under each cell with a wake.
struct DayCells {
  std::string cells = std::string(kCells, '?');
  std::string wakes = std::string(kCells, ' ');
};

// Each cell shows the most telling thing in it: in use (a session open) over awake over asleep
// over unknown, so even a short wake or session shows.
DayCells day_cells(const json& history, activity::TimePoint now, activity::TimePoint start) {
  DayCells day;
  const auto mark = [&](const json& list, const char* state, char c, std::string_view over) {
    for (const auto& e : list) {
      if (state && member(e, "state") != state) continue;
      const auto st = stretch(e, now);
      if (!st) continue;
      for (int i = 0; i < kCells; ++i) {
        const auto a = start + kCell * i;
        auto& cell = day.cells[static_cast<std::size_t>(i)];
        if (st->from < a + kCell && st->to > a && over.find(cell) != std::string_view::npos) cell = c;
      }
    }
  };
  mark(member(history, "intervals"), "asleep", '.', "?");
  mark(member(history, "intervals"), "awake", '=', "?.");
  mark(member(history, "in_use"), nullptr, '#', "?.=");
  for (const auto& w : member(history, "wakes")) {
    const auto& at_text = member(w, "at");
    const auto at = at_text.is_string() ? activity::parse_rfc3339(at_text.get<std::string>()) : std::nullopt;
    if (!at || *at < start) continue;
    const auto i = (*at - start) / kCell;
    if (i < kCells) day.wakes[static_cast<std::size_t>(i)] = '^';
  }
  return day;
}

// "15    18    21": the hours divisible by 3, local time, over the cells they begin in.
std::string hour_marks(activity::TimePoint start) {
  std::string hours(kCells + 2, ' ');
  for (int i = 0; i < kCells; ++i) {
    const std::time_t t = std::chrono::system_clock::to_time_t(start + kCell * i);
    std::tm local{};
    localtime_r(&t, &local);
    if (local.tm_min < 30 && local.tm_hour % 3 == 0) {
      char label[3];
      std::snprintf(label, sizeof label, "%02d", local.tm_hour);
      hours.replace(static_cast<std::size_t>(i), 2, label);
    }
  }
  return hours;
}

void trim_right(std::string& s) {
  while (!s.empty() && s.back() == ' ') s.pop_back();
}

void print_timeline(const json& history) {
  const auto& now_text = member(history, "now");
  const auto now = now_text.is_string() ? activity::parse_rfc3339(now_text.get<std::string>()) : std::nullopt;
  if (!now) return;
  // Cells on the half hours (of UTC, which are local half hours too in all but a few zones).
  const activity::TimePoint current_cell = activity::TimePoint{} + (now->time_since_epoch() / kCell) * kCell;
  const activity::TimePoint start = current_cell - kCell * (kCells - 1);
  auto day = day_cells(history, *now, start);
  auto hours = hour_marks(start);
  trim_right(hours);
  trim_right(day.wakes);
  std::cout << "\nlast 24 hours, 30 minutes a cell (local time):\n"
            << "            " << hours << "\n"
            << "  timeline  " << day.cells << "\n";
  if (!day.wakes.empty()) std::cout << "  wakes     " << day.wakes << "\n";
  std::cout
      << "  # in use  = awake  . asleep  ? unknown (before it was served, or the gateway was down)  ^ wake\n";
  const auto& totals = member(history, "totals");
  const auto& day_totals = member(totals, "24h");
  const auto& awake = member(day_totals, "awake_seconds");
  std::cout << "  slept " << percent(member(day_totals, "slept_share"))
            << " of the time known over the last 24 hours ("
            << human_seconds(awake.is_number() ? awake.get<double>() : 0.0) << " awake), "
            << percent(member(member(totals, "7d"), "slept_share")) << " over 7 days\n";
}

std::optional<int> need_spark(const Options& o, std::size_t extra_args, const std::string& command) {
  if (o.positional.size() != 1 + extra_args)
    return usage(command + (extra_args ? " needs NAME and DURATION" : " needs exactly one NAME"));
  if (!config::is_valid_spark_name(o.positional[0]))
    return usage("\"" + o.positional[0] + "\" is not a valid spark name");
  return std::nullopt;
}

int status(const Options& o) {
  if (o.positional.size() > 1) return usage("status takes at most one NAME");
  json sparks;
  if (o.positional.empty()) {
    auto body = call(o, "GET", "/api/v1/sparks");
    if (!body) return exit_code::failed;
    sparks = (*body)["sparks"];
  } else {
    if (auto bad = need_spark(o, 0, "status")) return *bad;
    auto body = call(o, "GET", "/api/v1/sparks/" + o.positional[0]);
    if (!body) return exit_code::failed;
    sparks = json::array({*body});
  }
  if (o.positional.empty()) {
    if (o.json_output)
      std::cout << json{{"sparks", sparks}}.dump(2) << "\n";
    else
      print_table(sparks);
    return exit_code::ok;
  }
  // One spark: its row and its last day.
  auto history = call(o, "GET", "/api/v1/sparks/" + o.positional[0] + "/history?hours=24");
  if (!history) return exit_code::failed;
  if (o.json_output) {
    json spark = sparks[0];
    spark["history"] = *history;
    std::cout << spark.dump(2) << "\n";
    return exit_code::ok;
  }
  print_table(sparks);
  print_timeline(*history);
  return exit_code::ok;
}

int port_number(const std::string& text) {
  int port = 0;
  std::from_chars(text.data(), text.data() + text.size(), port);
  return port;
}

// `ports NAME`: SSH and the dev ports, each with the spark's own port, the gateway's address
// for it and how to reach it.
int ports(const Options& o) {
  if (auto bad = need_spark(o, 0, "ports")) return *bad;
  auto body = call(o, "GET", "/api/v1/sparks/" + o.positional[0]);
  if (!body) return exit_code::failed;
  const auto listen = body->value("listen", std::string());
  const auto target = body->value("target", std::string());
  const auto ssh_port = target.substr(target.rfind(':') + 1);
  if (o.json_output) {  // SSH first, as in the table
    json all = json::array({{{"name", "ssh"},
                             {"port", port_number(ssh_port)},
                             {"listen", listen},
                             {"url", body->value("ssh_url", "")}}});
    for (const auto& p : (*body)["ports"]) all.push_back(p);
    std::cout << all.dump(2) << "\n";
    return exit_code::ok;
  }
  std::vector<std::vector<std::string>> rows = {{"NAME", "PORT", "LISTEN", "URL"}};
  rows.push_back({"ssh", ssh_port, listen, body->value("ssh", std::string())});
  for (const auto& p : (*body)["ports"]) {
    rows.push_back({p.value("name", std::string()), std::to_string(p.value("port", 0)),
                    p.value("listen", std::string()), p.value("url", std::string())});
  }
  print_rows(rows);
  return exit_code::ok;
}

int print_result(const Options& o, const json& spark, const std::string& text) {
  if (o.json_output)
    std::cout << spark.dump(2) << "\n";
  else
    std::cout << text << "\n";
  return exit_code::ok;
}

}  // namespace

const char* admin_commands_usage() {
  return R"(admin commands (talk to a running gateway's admin API):
  status [NAME] [-o json]                   every spark at a glance; with NAME, also its last day
  ports NAME [-o json]                      a spark's SSH and dev ports, and where to reach them
  wake NAME [--wait]                        wake a spark; --wait returns once it runs
  sleep NAME [--force]                      put a spark to sleep (--force: even with open connections)
  keep-awake NAME DURATION                  hold a spark awake, e.g. 4h
  keep-awake NAME --clear                   drop the hold
options: --admin URL (or SPARK_GATEWAY_ADMIN; default http://127.0.0.1:9090)
         --token-file FILE (or SPARK_GATEWAY_TOKEN=token)
exit codes: 0 ok, 1 the operation failed, 2 usage
)";
}

bool is_admin_command(const std::string& command) {
  return command == "status" || command == "ports" || command == "wake" || command == "sleep" ||
         command == "keep-awake";
}

int run_admin_command(const std::string& command, const std::vector<std::string>& args) {
  Options o;
  if (auto bad = parse(args, o)) return *bad;
  if (command == "status") return status(o);
  if (command == "ports") return ports(o);

  if (command == "wake") {
    if (auto bad = need_spark(o, 0, "wake")) return *bad;
    const std::string& name = o.positional[0];
    auto body = call(o, "POST", "/api/v1/sparks/" + name + "/wake" + (o.wait ? "?wait=true" : ""));
    if (!body) return exit_code::failed;
    return print_result(o, *body, name + ": " + body->value("state", std::string("waking")));
  }
  if (command == "sleep") {
    if (auto bad = need_spark(o, 0, "sleep")) return *bad;
    const std::string& name = o.positional[0];
    auto body = call(o, "POST", "/api/v1/sparks/" + name + "/sleep" + (o.force ? "?force=true" : ""));
    if (!body) return exit_code::failed;
    return print_result(o, *body, name + ": " + body->value("state", std::string("sleeping")));
  }
  // keep-awake
  if (o.clear) {
    if (auto bad = need_spark(o, 0, "keep-awake --clear")) return *bad;
    const std::string& name = o.positional[0];
    auto body = call(o, "DELETE", "/api/v1/sparks/" + name + "/keep-awake");
    if (!body) return exit_code::failed;
    return print_result(o, *body, name + ": keep-awake cleared");
  }
  if (auto bad = need_spark(o, 1, "keep-awake")) return *bad;
  const std::string& name = o.positional[0];
  std::string why;
  if (!config::parse_duration(o.positional[1], &why)) return usage("keep-awake DURATION: " + why);
  auto body = call(o, "POST", "/api/v1/sparks/" + name + "/keep-awake", json{{"for", o.positional[1]}}.dump());
  if (!body) return exit_code::failed;
  const std::string until = (*body)["keep_awake_until"].is_string()
                                ? (*body)["keep_awake_until"].get<std::string>()
                                : "?";
  return print_result(o, *body, name + ": kept awake until " + until);
}

}  // namespace spark::gateway
