#include "activity/activity_store.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace spark::activity {
namespace {

using nlohmann::json;

[[noreturn]] void fail_errno(const std::string& what, const std::filesystem::path& path) {
  throw std::runtime_error(what + " " + path.string() + ": " + std::strerror(errno));
}

void write_all(int fd, const std::string& data, const std::filesystem::path& path) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail_errno("cannot write", path);
    done += static_cast<std::size_t>(n);
  }
}

std::string state_name(bool awake) { return awake ? "awake" : "asleep"; }

// A time field of a history entry; throws with the field's name if it is missing or bad.
TimePoint time_at(const json& entry, const char* key) {
  const auto it = entry.find(key);
  if (it == entry.end() || !it->is_string()) throw std::runtime_error(std::string("no ") + key + " time");
  const auto t = parse_rfc3339(it->get<std::string>());
  if (!t) throw std::runtime_error(std::string("bad ") + key + " time \"" + it->get<std::string>() + "\"");
  return *t;
}

bool awake_state(const json& entry) {
  const auto it = entry.find("state");
  if (it != entry.end() && *it == "awake") return true;
  if (it != entry.end() && *it == "asleep") return false;
  throw std::runtime_error("state is neither \"awake\" nor \"asleep\"");
}

json history_to_json(const SparkHistory& h) {
  json intervals = json::array();
  for (const auto& i : h.intervals())
    intervals.push_back(
        {{"from", format_rfc3339(i.from)}, {"to", format_rfc3339(i.to)}, {"state", state_name(i.awake)}});
  json wakes = json::array();
  for (const auto& w : h.wakes()) wakes.push_back({{"at", format_rfc3339(w.at)}, {"cause", w.cause}});
  json in_use = json::array();
  for (const auto& s : h.in_use())
    in_use.push_back({{"from", format_rfc3339(s.from)}, {"to", format_rfc3339(s.to)}});
  json out = {{"intervals", std::move(intervals)}, {"wakes", std::move(wakes)}, {"in_use", std::move(in_use)}};
  if (const auto& c = h.current())
    out["current"] = {{"since", format_rfc3339(c->since)}, {"state", state_name(c->awake)}};
  if (const auto& since = h.in_use_since()) out["in_use_since"] = format_rfc3339(*since);
  return out;
}

// Rebuilds a history entry by entry: one bad entry (a hand edit, a bug of an older version)
// costs that entry and a warning, never the rest of the history or the file.
class HistoryReader {
 public:
  HistoryReader(const json& in, const std::string& spark, std::vector<std::string>& warnings)
      : in_(in), spark_(spark), warnings_(warnings) {}

  // What was going on when the file was written ends at `saved_at`.
  SparkHistory read(std::optional<TimePoint> saved_at) {
    if (!in_.is_object()) {
      skipped("history", "not an object");
      return {};
    }
    each("intervals", [this](const json& e) {
      return h_.restore_interval({time_at(e, "from"), time_at(e, "to"), awake_state(e)});
    });
    one("current", [this](const json& e) { return h_.restore_current({time_at(e, "since"), awake_state(e)}); });
    each("wakes", [this](const json& e) {
      const auto cause = e.find("cause");
      return h_.restore_wake(
          {time_at(e, "at"), cause != e.end() && cause->is_string() ? cause->get<std::string>() : ""});
    });
    each("in_use", [this](const json& e) { return h_.restore_in_use({time_at(e, "from"), time_at(e, "to")}); });
    if (const auto it = in_.find("in_use_since"); it != in_.end()) {
      const auto since = it->is_string() ? parse_rfc3339(it->get<std::string>()) : std::nullopt;
      if (!since)
        skipped("history.in_use_since", "not a time");
      else if (auto refused = h_.restore_in_use_since(*since))
        skipped("history.in_use_since", *refused);
    }
    end_what_was_going_on(saved_at);
    return std::move(h_);
  }

 private:
  void skipped(const std::string& what, const std::string& why) {
    warnings_.push_back("activity.json: spark " + spark_ + ": " + what + " skipped: " + why);
  }

  // One entry through `take` (which returns why it refused it), or the reason it is unreadable.
  template <typename Take>
  void take_entry(const json& entry, const std::string& what, const Take& take) {
    try {
      if (!entry.is_object()) throw std::runtime_error("not an object");
      if (auto refused = take(entry)) skipped(what, *refused);
    } catch (const std::exception& e) {
      skipped(what, e.what());
    }
  }

  template <typename Take>
  void one(const char* key, const Take& take) {
    if (const auto it = in_.find(key); it != in_.end()) take_entry(*it, std::string("history.") + key, take);
  }

  template <typename Take>
  void each(const char* key, const Take& take) {
    const auto it = in_.find(key);
    if (it == in_.end()) return;
    if (!it->is_array()) return skipped(std::string("history.") + key, "not a list");
    for (std::size_t n = 0; n < it->size(); ++n)
      take_entry((*it)[n], std::string("history.") + key + "[" + std::to_string(n) + "]", take);
  }

  void end_what_was_going_on(std::optional<TimePoint> saved_at) {
    if (saved_at) {
      h_.close(*saved_at);
      h_.prune(*saved_at);
      return;
    }
    if (!h_.current() && !h_.in_use_since()) return;
    // Going on, with no end known: dropped rather than guessed.
    skipped("history's current state", "the file does not say when it was written (no saved_at)");
    SparkHistory closed_only;
    for (const auto& i : h_.intervals()) closed_only.restore_interval(i);
    for (const auto& w : h_.wakes()) closed_only.restore_wake(w);
    for (const auto& span : h_.in_use()) closed_only.restore_in_use(span);
    h_ = std::move(closed_only);
  }

  const json& in_;
  const std::string& spark_;
  std::vector<std::string>& warnings_;
  SparkHistory h_;
};

}  // namespace

ActivityStore::ActivityStore(std::filesystem::path state_dir)
    : dir_(std::move(state_dir)), file_(dir_ / "activity.json") {}

ActivitySnapshot ActivityStore::load(std::vector<std::string>* warnings) const {
  std::ifstream in(file_, std::ios::binary);
  if (!in) return {};
  std::ostringstream text;
  text << in.rdbuf();
  ActivitySnapshot out;
  std::vector<std::string> history_warnings;
  try {
    const json root = json::parse(text.str());
    // Written since the histories (issue 21): the moment the file recorded.
    std::optional<TimePoint> saved_at;
    if (const auto it = root.find("saved_at"); it != root.end() && it->is_string())
      saved_at = parse_rfc3339(it->get<std::string>());
    for (const auto& [name, entry] : root.at("sparks").items()) {
      PersistedActivity p;
      const auto last = parse_rfc3339(entry.at("last_activity").get<std::string>());
      if (!last) throw std::runtime_error("bad last_activity for " + name);
      p.last_activity = *last;
      if (entry.contains("keep_awake_until") && !entry["keep_awake_until"].is_null()) {
        const auto until = parse_rfc3339(entry["keep_awake_until"].get<std::string>());
        if (!until) throw std::runtime_error("bad keep_awake_until for " + name);
        p.keep_awake_until = *until;
      }
      // Added later (issue 19): older files have none.
      if (const auto client = entry.find("last_client"); client != entry.end() && client->is_string())
        p.last_client = client->get<std::string>();
      // Added later (issue 21): older files have none.
      if (const auto history = entry.find("history"); history != entry.end())
        p.history = HistoryReader(*history, name, history_warnings).read(saved_at);
      out.emplace(name, std::move(p));
    }
  } catch (const std::exception& e) {
    std::filesystem::path aside = file_;
    aside += ".corrupt";
    std::error_code ec;
    std::filesystem::rename(file_, aside, ec);
    throw std::runtime_error(file_.string() + " is unreadable (" + e.what() + "); moved to " + aside.string() +
                             ", starting with no persisted activity");
  }
  for (const auto& w : history_warnings) {
    if (warnings)
      warnings->push_back(w);
    else
      spdlog::warn("{} ({})", w, file_.string());
  }
  return out;
}

void ActivityStore::save(const ActivitySnapshot& snapshot, TimePoint saved_at) const {
  json sparks = json::object();
  for (const auto& [name, p] : snapshot) {
    sparks[name] = {{"last_activity", format_rfc3339(p.last_activity)},
                    {"keep_awake_until",
                     p.keep_awake_until ? json(format_rfc3339(*p.keep_awake_until)) : json(nullptr)}};
    if (!p.last_client.empty()) sparks[name]["last_client"] = p.last_client;
    if (!p.history.empty()) sparks[name]["history"] = history_to_json(p.history);
  }
  // saved_at: where the histories' current states end if the gateway stops before the next
  // write. Version stays 1: the additions are optional, and older gateways ignore them.
  const json root = {{"version", 1}, {"saved_at", format_rfc3339(saved_at)}, {"sparks", sparks}};
  const std::string data = root.dump(2) + "\n";

  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) throw std::runtime_error("cannot create " + dir_.string() + ": " + ec.message());

  std::filesystem::path tmp = file_;
  tmp += ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fail_errno("cannot create", tmp);
  try {
    write_all(fd, data, tmp);
    if (::fsync(fd) != 0) fail_errno("cannot fsync", tmp);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    fail_errno("cannot close", tmp);
  }
  if (::rename(tmp.c_str(), file_.c_str()) != 0) {
    ::unlink(tmp.c_str());
    fail_errno("cannot rename onto", file_);
  }
  // Make the rename itself durable.
  if (const int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace spark::activity
