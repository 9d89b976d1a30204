#include "k8s/event_recorder.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "k8s/api_client.hpp"

namespace spark::k8s {

EventRecorder::EventRecorder(Writer writer, Limits limits, std::function<Clock::time_point()> now)
    : writer_(std::move(writer)), limits_(limits), now_(std::move(now)) {}

std::string EventRecorder::key_of(const nlohmann::json& event) {
  // client-go's getEventKey: the object (by UID, so a recreated Deployment of the same name
  // starts afresh), the source, type, reason and message.
  const auto& object = event.value("involvedObject", nlohmann::json::object());
  return object.value("namespace", "") + "\n" + object.value("name", "") + "\n" + object.value("uid", "") + "\n" +
         event.value("type", "") + "\n" + event.value("reason", "") + "\n" + event.value("message", "");
}

std::size_t EventRecorder::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

void EventRecorder::take_token(Entry& e, Clock::time_point now) const {
  if (limits_.refill.count() <= 0) {
    e.tokens = limits_.burst;
    return;
  }
  const double earned = std::chrono::duration<double>(now - e.refilled) /
                        std::chrono::duration<double>(limits_.refill);
  e.tokens = std::min<double>(limits_.burst, e.tokens + std::max(0.0, earned));
  e.refilled = now;
}

void EventRecorder::forget_least_recent() {
  auto oldest = entries_.end();
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if (!it->second.writing && (oldest == entries_.end() || it->second.last_seen < oldest->second.last_seen))
      oldest = it;
  if (oldest != entries_.end()) entries_.erase(oldest);
}

void EventRecorder::record(const nlohmann::json& event, const std::string& now_text) {
  const auto key = key_of(event);
  const auto write = take_write(key, event, now_text);
  if (!write) return;
  const bool written = send(*write);
  std::lock_guard lock(mu_);
  const auto it = entries_.find(key);
  if (it == entries_.end()) return;
  it->second.writing = false;
  if (written) it->second.created = true;
}

std::optional<EventRecorder::Write> EventRecorder::take_write(const std::string& key, const nlohmann::json& event,
                                                              const std::string& now_text) {
  std::lock_guard lock(mu_);
  const auto now = now_();
  auto [it, fresh] = entries_.try_emplace(key);
  Entry& e = it->second;
  e.last_seen = now;
  if (fresh) {
    e.event = event;
    e.tokens = limits_.burst;
    e.refilled = now;
    if (entries_.size() > limits_.max_events) forget_least_recent();
  }
  ++e.count;
  if (e.writing) return std::nullopt;  // counted; the write in flight or the next one carries it
  take_token(e, now);
  if (e.tokens < 1) return std::nullopt;  // rate-limited: counted, written with the next write allowed
  e.tokens -= 1;
  e.writing = true;
  e.event["count"] = e.count;
  e.event["lastTimestamp"] = now_text;
  Write write;
  write.whole = e.event;
  write.name = e.event["metadata"].value("name", "");
  if (e.created) write.patch = {{"count", e.count}, {"lastTimestamp", now_text}};
  return write;
}

bool EventRecorder::send(const Write& write) const {
  try {
    if (!write.patch.is_null()) {
      try {
        writer_.patch(write.name, write.patch);
        return true;
      } catch (const ApiError& ex) {
        if (!ex.is_not_found()) throw;
        // Expired (Events live an hour by default) or deleted: make it again, count and all.
      }
    }
    try {
      writer_.create(write.whole);
    } catch (const ApiError& ex) {
      // A create that timed out on our side may have landed: then it is there to patch.
      if (!ex.is_conflict()) throw;
    }
    return true;
  } catch (const std::exception& ex) {
    spdlog::warn("spark {}: cannot record the event \"{}\": {}", write.whole["involvedObject"].value("name", ""),
                 write.whole.value("message", ""), ex.what());
    return false;
  }
}

}  // namespace spark::k8s
