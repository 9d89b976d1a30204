// Unit tests for k8s/event_recorder: an Event that repeats is one Event whose count grows, as
// the kubelet's are; writes are rate-limited; an expired Event is made again (issue 23).
#include "k8s/event_recorder.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "k8s/api_client.hpp"

namespace spark::k8s {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

struct FakeApi {
  std::vector<json> created;
  std::vector<std::pair<std::string, json>> patched;
  int fail_patch_with = 0;  // an HTTP status to answer the next patches with
  int fail_create_with = 0;

  EventRecorder::Writer writer() {
    return {[this](const json& e) {
              if (fail_create_with) throw ApiError(fail_create_with, "", "create failed");
              created.push_back(e);
            },
            [this](const std::string& name, const json& p) {
              if (fail_patch_with) throw ApiError(fail_patch_with, "", "patch failed");
              patched.emplace_back(name, p);
            }};
  }
};

json event(const std::string& object, const std::string& reason, const std::string& message,
           const std::string& name = "ev-1") {
  return {{"metadata", {{"name", name}, {"namespace", "spark"}}},
          {"involvedObject", {{"kind", "Deployment"}, {"name", object}, {"namespace", "spark"}, {"uid", "uid-" + object}}},
          {"type", "Warning"},
          {"reason", reason},
          {"message", message},
          {"count", 1}};
}

struct Clock {
  EventRecorder::Clock::time_point now{};
  std::function<EventRecorder::Clock::time_point()> fn() {
    return [this] { return now; };
  }
};

TEST(EventRecorder, TheSameEventAgainIsOneEventWithItsCountPatched) {
  FakeApi api;
  Clock clock;
  EventRecorder r(api.writer(), {}, clock.fn());
  const auto e = event("brave-dolphin", "InvalidAnnotation", "idle-timeout \"soon\": bad");
  r.record(e, "t1");
  r.record(event("brave-dolphin", "InvalidAnnotation", "idle-timeout \"soon\": bad", "ev-2"), "t2");
  r.record(e, "t3");
  ASSERT_EQ(api.created.size(), 1u);
  EXPECT_EQ(api.created[0]["count"], 1);
  EXPECT_EQ(api.created[0]["lastTimestamp"], "t1");
  ASSERT_EQ(api.patched.size(), 2u);
  EXPECT_EQ(api.patched[0].first, "ev-1");  // the first one's name, whatever later ones were called
  EXPECT_EQ(api.patched[0].second, (json{{"count", 2}, {"lastTimestamp", "t2"}}));
  EXPECT_EQ(api.patched[1].second, (json{{"count", 3}, {"lastTimestamp", "t3"}}));
  EXPECT_EQ(r.size(), 1u);
}

TEST(EventRecorder, AnotherMessageReasonOrObjectIsAnotherEvent) {
  FakeApi api;
  EventRecorder r(api.writer());
  r.record(event("brave-dolphin", "InvalidAnnotation", "a"), "t");
  r.record(event("brave-dolphin", "InvalidAnnotation", "b", "ev-2"), "t");
  r.record(event("brave-dolphin", "InvalidPort", "a", "ev-3"), "t");
  r.record(event("calm-otter", "InvalidAnnotation", "a", "ev-4"), "t");
  EXPECT_EQ(api.created.size(), 4u);
  EXPECT_TRUE(api.patched.empty());
}

TEST(EventRecorder, WritesAreRateLimitedAndTheCountCatchesUp) {
  FakeApi api;
  Clock clock;
  EventRecorder r(api.writer(), {.burst = 3, .refill = 30s, .max_events = 10}, clock.fn());
  const auto e = event("brave-dolphin", "InvalidAnnotation", "bad");
  for (int i = 0; i < 10; ++i) r.record(e, "t");
  // The burst: the create and two patches; the other seven are only counted.
  EXPECT_EQ(api.created.size(), 1u);
  ASSERT_EQ(api.patched.size(), 2u);
  EXPECT_EQ(api.patched.back().second["count"], 3);
  clock.now += 29s;
  r.record(e, "t");
  EXPECT_EQ(api.patched.size(), 2u);
  clock.now += 1s;  // one write earned: it carries every occurrence so far
  r.record(e, "t12");
  ASSERT_EQ(api.patched.size(), 3u);
  EXPECT_EQ(api.patched.back().second, (json{{"count", 12}, {"lastTimestamp", "t12"}}));
}

TEST(EventRecorder, AnExpiredEventIsMadeAgainWithItsCount) {
  FakeApi api;
  EventRecorder r(api.writer());
  const auto e = event("brave-dolphin", "InvalidAnnotation", "bad");
  r.record(e, "t1");
  api.fail_patch_with = 404;  // Events expire (an hour by default)
  r.record(e, "t2");
  ASSERT_EQ(api.created.size(), 2u);
  EXPECT_EQ(api.created[1]["count"], 2);
  EXPECT_EQ(api.created[1]["lastTimestamp"], "t2");
  api.fail_patch_with = 0;
  r.record(e, "t3");
  ASSERT_EQ(api.patched.size(), 1u);
  EXPECT_EQ(api.patched[0].second["count"], 3);
}

TEST(EventRecorder, AFailedCreateIsTriedAgainAndNeverThrows) {
  FakeApi api;
  EventRecorder r(api.writer());
  const auto e = event("brave-dolphin", "Woken", "by someone");
  api.fail_create_with = 503;
  EXPECT_NO_THROW(r.record(e, "t1"));
  EXPECT_TRUE(api.created.empty());
  api.fail_create_with = 0;
  r.record(e, "t2");
  ASSERT_EQ(api.created.size(), 1u);
  EXPECT_EQ(api.created[0]["count"], 2);  // both occurrences
  EXPECT_TRUE(api.patched.empty());
  // A create that timed out for us but landed: 409 AlreadyExists means it is there to patch.
  const auto other = event("calm-otter", "Woken", "by someone", "ev-9");
  api.fail_create_with = 409;
  r.record(other, "t");
  api.fail_create_with = 0;
  r.record(other, "t");
  ASSERT_EQ(api.patched.size(), 1u);
  EXPECT_EQ(api.patched[0].first, "ev-9");
}

TEST(EventRecorder, RemembersABoundedNumberOfEvents) {
  FakeApi api;
  Clock clock;
  EventRecorder r(api.writer(), {.burst = 5, .refill = 30s, .max_events = 3}, clock.fn());
  for (int i = 0; i < 10; ++i) {
    clock.now += 1s;
    r.record(event("spark-" + std::to_string(i), "Woken", "m", "ev-" + std::to_string(i)), "t");
  }
  EXPECT_EQ(r.size(), 3u);
  // The least recently seen went: spark-0 again is a new Event.
  r.record(event("spark-0", "Woken", "m", "ev-0b"), "t");
  EXPECT_EQ(api.created.back()["metadata"]["name"], "ev-0b");
  // A recent one is still patched.
  r.record(event("spark-9", "Woken", "m", "ev-9b"), "t");
  ASSERT_FALSE(api.patched.empty());
  EXPECT_EQ(api.patched.back().first, "ev-9");
}

}  // namespace
}  // namespace spark::k8s
