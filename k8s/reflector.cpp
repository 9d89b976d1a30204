#include "k8s/reflector.hpp"

#include <spdlog/spdlog.h>

#include <random>

#include "k8s/watch_event.hpp"

namespace spark::k8s {
namespace {

using namespace std::chrono_literals;

constexpr std::chrono::milliseconds kFirstBackoff = 500ms;
constexpr std::chrono::milliseconds kMaxBackoff = 30s;

// A random factor in [1, 2): many gateways reconnecting after an API outage spread out.
double jitter() {
  thread_local std::mt19937 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(1.0, 2.0)(rng);
}

}  // namespace

Reflector::Reflector(ApiClient& api, std::string what, std::string collection_path,
                     std::string label_selector, WatchHandler& handler)
    : api_(api),
      what_(std::move(what)),
      path_(std::move(collection_path)),
      selector_(std::move(label_selector)),
      handler_(handler) {}

Reflector::~Reflector() { stop(); }

void Reflector::start() { thread_ = std::jthread([this](std::stop_token stop) { run(stop); }); }

void Reflector::stop() {
  thread_.request_stop();
  api_.cancel_streams();  // a watch blocked in a read ends now
  if (thread_.joinable()) thread_.join();
}

bool Reflector::back_off(std::stop_token stop) {
  backoff_ = backoff_.count() == 0 ? kFirstBackoff : std::min(backoff_ * 2, kMaxBackoff);
  const auto wait = std::chrono::milliseconds(static_cast<long>(backoff_.count() * jitter()));
  std::unique_lock lock(mu_);
  wake_.wait_for(lock, stop, wait, [] { return false; });
  return !stop.stop_requested();
}

void Reflector::run(std::stop_token stop) {
  for (;;) {
    if (stop.stop_requested()) return;
    try {
      if (resource_version_.empty()) list();
      watch();
    } catch (const ApiError& e) {
      current_ = false;
      if (stop.stop_requested()) return;
      if (e.is_expired()) {
        // The history we would resume from is compacted away: start over with a list.
        spdlog::info("kubernetes: {} watch expired ({}); listing again", what_, e.what());
        resource_version_.clear();
        continue;
      }
      spdlog::warn("kubernetes: {} watch: {}; retrying", what_, e.what());
      if (!back_off(stop)) return;
    } catch (const std::exception& e) {
      current_ = false;
      spdlog::error("kubernetes: {} watch: {}; retrying", what_, e.what());
      if (!back_off(stop)) return;
    }
  }
}

void Reflector::list() {
  std::string path = path_;
  if (!selector_.empty()) path += "?labelSelector=" + url_encode(selector_);
  const auto list = api_.list(path);
  std::vector<json> items;
  if (const auto it = list.find("items"); it != list.end() && it->is_array())
    items.assign(it->begin(), it->end());
  resource_version_ = list.value("/metadata/resourceVersion"_json_pointer, std::string());
  if (resource_version_.empty()) throw ApiError(200, "BadResponse", "list of " + what_ + " has no resourceVersion");
  handler_.replace(items);
  current_ = true;
  if (synced_.exchange(true)) ++relists_;
  backoff_ = std::chrono::milliseconds(0);
  spdlog::debug("kubernetes: listed {} {} at resourceVersion {}", items.size(), what_, resource_version_);
}

void Reflector::watch() {
  // Like client-go: ask the server to end the watch after a random 5-10 minutes, so
  // connections are renewed (and balanced across API servers) without errors.
  thread_local std::mt19937 rng{std::random_device{}()};
  const int timeout_s = std::uniform_int_distribution<int>(300, 600)(rng);
  std::string path = path_ + "?watch=1&allowWatchBookmarks=true&resourceVersion=" +
                     url_encode(resource_version_) + "&timeoutSeconds=" + std::to_string(timeout_s);
  if (!selector_.empty()) path += "&labelSelector=" + url_encode(selector_);

  std::optional<ApiError> failure;
  const auto on_line = [&](std::string_view line) {
    // Anything but a watch event ends the stream as a bad answer (the reflector resumes or
    // relists), never an exception out of the HTTP client.
    WatchEvent event;
    try {
      event = parse_watch_event(line);
    } catch (const std::exception& e) {
      failure.emplace(200, "BadResponse", what_ + " watch sent a line that is not a watch event: " + e.what());
      return false;
    }
    if (event.type == "ERROR") {
      // The stream's way of failing, e.g. {"type":"ERROR","object":{"kind":"Status","code":410}}.
      const auto code = event.object.value("code", json());
      failure.emplace(error_from_response(code.is_number_integer() ? code.get<int>() : 500, event.object.dump(),
                                          what_ + " watch"));
      return false;
    }
    if (const auto rv = event.resource_version(); !rv.empty()) resource_version_ = rv;
    current_ = true;  // the stream answers: what it sends from here on is news
    if (event.type == "BOOKMARK") return true;  // only moves the resume point forward
    if (event.type == "ADDED" || event.type == "MODIFIED" || event.type == "DELETED") {
      handler_.apply(event.type, event.object);
      backoff_ = std::chrono::milliseconds(0);
    }
    return true;
  };
  api_.stream(path, on_line, std::chrono::seconds(timeout_s + 30));
  if (failure) throw *failure;
}

}  // namespace spark::k8s
