#include "activity/activity_store.hpp"

#include <fcntl.h>
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

}  // namespace

ActivityStore::ActivityStore(std::filesystem::path state_dir)
    : dir_(std::move(state_dir)), file_(dir_ / "activity.json") {}

ActivitySnapshot ActivityStore::load() const {
  std::ifstream in(file_, std::ios::binary);
  if (!in) return {};
  std::ostringstream text;
  text << in.rdbuf();
  ActivitySnapshot out;
  try {
    const json root = json::parse(text.str());
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
      out.emplace(name, p);
    }
  } catch (const std::exception& e) {
    std::filesystem::path aside = file_;
    aside += ".corrupt";
    std::error_code ec;
    std::filesystem::rename(file_, aside, ec);
    throw std::runtime_error(file_.string() + " is unreadable (" + e.what() + "); moved to " + aside.string() +
                             ", starting with no persisted activity");
  }
  return out;
}

void ActivityStore::save(const ActivitySnapshot& snapshot) const {
  json sparks = json::object();
  for (const auto& [name, p] : snapshot) {
    sparks[name] = {{"last_activity", format_rfc3339(p.last_activity)},
                    {"keep_awake_until",
                     p.keep_awake_until ? json(format_rfc3339(*p.keep_awake_until)) : json(nullptr)}};
    if (!p.last_client.empty()) sparks[name]["last_client"] = p.last_client;
  }
  const std::string data = json{{"version", 1}, {"sparks", sparks}}.dump(2) + "\n";

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
