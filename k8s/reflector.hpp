#pragma once
// Keeps a local copy of one collection (e.g. the spark Deployments) in step with the API
// server, the way client-go's reflector does: list, then watch from the list's resourceVersion
// with bookmarks; resume from the last resourceVersion seen when a watch ends; relist when the
// server says that version is gone (410 Expired); back off with jitter on errors. One thread.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <string_view>
#include <stop_token>
#include <thread>
#include <vector>

#include "k8s/api_client.hpp"

namespace spark::k8s {

// Receives the collection's changes, on the reflector's thread.
class WatchHandler {
 public:
  virtual ~WatchHandler() = default;
  // A fresh list: it replaces everything known before.
  virtual void replace(const std::vector<json>& items) = 0;
  // type: ADDED, MODIFIED or DELETED.
  virtual void apply(std::string_view type, const json& object) = 0;
};

class Reflector {
 public:
  // `collection_path` like "/apis/apps/v1/namespaces/spark/deployments"; `what` names it in logs.
  Reflector(ApiClient& api, std::string what, std::string collection_path,
            std::string label_selector, WatchHandler& handler);
  ~Reflector();
  Reflector(const Reflector&) = delete;
  Reflector& operator=(const Reflector&) = delete;

  void start();
  void stop();  // returns once the thread has ended
  // True once a list has succeeded: the local copy exists (it may lag while reconnecting).
  bool synced() const { return synced_; }
  std::uint64_t relists() const { return relists_; }
  // True while the copy follows the server: listed, or watching with the stream answering.
  // False from a failed watch until the resumed watch (or a relist) delivers again: meanwhile
  // decisions that must not act on old news read the object from the API instead.
  bool current() const { return current_; }

 private:
  void run(std::stop_token stop);
  void list();
  // Watches from resource_version_ until the stream ends. Throws ApiError.
  void watch();
  // Waits out a backoff step; false if stop() was called meanwhile.
  bool back_off(std::stop_token stop);  // false: stopped while waiting

  ApiClient& api_;
  std::string what_;
  std::string path_;
  std::string selector_;
  WatchHandler& handler_;
  std::string resource_version_;  // empty: list first
  std::chrono::milliseconds backoff_{0};
  std::atomic<bool> synced_{false};
  std::atomic<bool> current_{false};
  std::atomic<std::uint64_t> relists_{0};

  std::mutex mu_;  // for wake_ only: a back-off that stop() cuts short
  std::condition_variable_any wake_;
  std::jthread thread_;
};

}  // namespace spark::k8s
