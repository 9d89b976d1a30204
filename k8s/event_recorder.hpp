#pragma once
// Events that repeat are one Event with a count, as the kubelet's recorder does them
// (client-go tools/record: EventCorrelator + eventLogger): the first occurrence of an
// (object, type, reason, message) creates a core/v1 Event; later ones PATCH its `count` and
// `lastTimestamp`, at most kBurst at once and then one per kRefill per Event (occurrences in
// between are counted and written with the next PATCH). A bad annotation seen by every
// discovery pass once made a new Event per pass (issue 23).
//
// Thread-safe; the API calls run on the caller's thread, outside the lock. Never throws: an
// Event that cannot be written is logged, it must not fail a wake or a sleep.
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace spark::k8s {

class EventRecorder {
 public:
  using Clock = std::chrono::steady_clock;
  // The API calls (they throw ApiError): create a core/v1 Event, merge-patch one by name.
  struct Writer {
    std::function<void(const nlohmann::json& event)> create;
    std::function<void(const std::string& name, const nlohmann::json& patch)> patch;
  };
  struct Limits {
    int burst = 5;                             // writes per Event at once
    std::chrono::milliseconds refill{30'000};  // then one per this
    std::size_t max_events = 4096;             // remembered Events (least recently seen go)
  };

  EventRecorder(Writer writer, Limits limits, std::function<Clock::time_point()> now = Clock::now);
  explicit EventRecorder(Writer writer) : EventRecorder(std::move(writer), Limits{}) {}

  // One occurrence. `event` is the whole Event as a first occurrence would create it (name,
  // involvedObject with its uid, type, reason, message, count 1, timestamps); `now` its
  // lastTimestamp (RFC 3339).
  void record(const nlohmann::json& event, const std::string& now);

  // How many Events it remembers (tests).
  std::size_t size() const;

 private:
  struct Entry {
    nlohmann::json event;  // as created, with the count and lastTimestamp last written
    long count = 0;        // occurrences so far (written or not)
    double tokens = 0;
    Clock::time_point refilled{};
    Clock::time_point last_seen{};
    bool writing = false;  // a call for it is in flight: others only count
    bool created = false;  // the API has it (else the next write creates it)
  };
  // One call to make: the whole Event (to create), or the count and time to patch onto it.
  struct Write {
    nlohmann::json whole;
    nlohmann::json patch;  // null: create
    std::string name;
  };
  // Counts the event; the call to make now, if no call for it is in flight and the rate allows.
  std::optional<Write> take_write(const std::string& key, const nlohmann::json& event,
                                  const std::string& now_text);
  // Makes the call (outside the lock); false if the API has not got it.
  bool send(const Write& write) const;
  static std::string key_of(const nlohmann::json& event);
  void take_token(Entry& e, Clock::time_point now) const;
  void forget_least_recent();

  Writer writer_;
  Limits limits_;
  std::function<Clock::time_point()> now_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
};

}  // namespace spark::k8s
