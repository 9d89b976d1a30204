// limits.max_running across replicas (k8s/running_places): claims in one Lease written with
// resourceVersion preconditions. Several RunningPlaces (replicas) over one fake Lease that answers
// as the API server does: 404 before it exists, 409 AlreadyExists on a second create, 409
// Conflict on a PUT whose resourceVersion is not the current one.
#include "k8s/running_places.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <optional>
#include <string>

#include "activity/time_format.hpp"
#include "k8s/api_client.hpp"

namespace spark::k8s {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kAnnotation = "spark-gateway/running-claims";

PlaceTime at(int seconds) {
  return PlaceTime{} + std::chrono::hours(24 * 365 * 50) + std::chrono::seconds(seconds);
}

struct FakeLease {
  std::optional<json> lease;
  int rv = 100;
  int gets = 0, creates = 0, puts = 0, conflicts = 0;
  // Runs just before the next write is applied (another replica writing first), once.
  std::function<void()> before_write;
  int fail_get_with = 0;

  void run_before_write() {
    if (auto f = std::exchange(before_write, nullptr)) f();
  }
  json stored(json body) {
    body["metadata"]["resourceVersion"] = std::to_string(++rv);
    lease = body;
    return body;
  }
  RunningPlaces::LeaseApi api() {
    return {[this]() -> json {
              ++gets;
              if (fail_get_with) throw ApiError(fail_get_with, "InternalError", "Internal error occurred: etcd");
              if (!lease)
                throw ApiError(404, "NotFound", "leases.coordination.k8s.io \"spark-gateway-running\" not found");
              return *lease;
            },
            [this](const json& body) -> json {
              ++creates;
              run_before_write();
              if (lease) {
                ++conflicts;
                throw ApiError(409, "AlreadyExists",
                               "leases.coordination.k8s.io \"spark-gateway-running\" already exists");
              }
              EXPECT_FALSE(body["metadata"].contains("resourceVersion"));
              return stored(body);
            },
            [this](const json& body) -> json {
              ++puts;
              run_before_write();
              if (!lease) throw ApiError(404, "NotFound", "not found");
              if (body["metadata"].value("resourceVersion", "") != (*lease)["metadata"]["resourceVersion"]) {
                ++conflicts;
                throw ApiError(409, "Conflict", "Operation cannot be fulfilled on leases.coordination.k8s.io");
              }
              return stored(body);
            }};
  }
  RunningClaims claims() const {
    if (!lease) return {};
    return parse_running_claims((*lease)["metadata"]["annotations"].value(kAnnotation, ""));
  }
};

struct Replica {
  PlaceViews views;
  PlaceTime now = at(0);
  RunningPlaces places;
  Replica(FakeLease& lease)
      : places(
            lease.api(), "spark", "spark-gateway-running", kAnnotation, [this] { return views; },
            [this] { return now; }) {}
  bool claim(const std::string& name, int max) { return places.claim(name, max, 60s); }
};

TEST(RunningClaims, RoundTripAndBadEntriesAreLeftOut) {
  const RunningClaims claims{{"brave-dolphin", {at(0), at(60)}}, {"calm-otter", {at(5), at(65)}}};
  EXPECT_EQ(parse_running_claims(format_running_claims(claims)), claims);
  std::vector<std::string> problems;
  const auto parsed = parse_running_claims(
      R"({"a": {"at": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:05:00Z"}, "b": "soon", "c": {"at": "x", "until": "y"}})",
      &problems);
  EXPECT_EQ(parsed.size(), 1u);
  EXPECT_TRUE(parsed.contains("a"));
  EXPECT_EQ(problems.size(), 2u);
  EXPECT_TRUE(parse_running_claims("not json").empty());
  EXPECT_TRUE(parse_running_claims("[1,2]").empty());
}

TEST(RunningPlaces, CreatesTheLeaseOn404AndClaims) {
  FakeLease lease;
  Replica a(lease);
  EXPECT_TRUE(a.claim("brave-dolphin", 2));
  EXPECT_EQ(lease.creates, 1);
  ASSERT_TRUE(lease.lease);
  EXPECT_EQ((*lease.lease)["kind"], "Lease");
  EXPECT_EQ((*lease.lease)["metadata"]["name"], "spark-gateway-running");
  const auto claims = lease.claims();
  ASSERT_TRUE(claims.contains("brave-dolphin"));
  EXPECT_EQ(claims.at("brave-dolphin").at, at(0));
  EXPECT_EQ(claims.at("brave-dolphin").until, at(60));
}

TEST(RunningPlaces, TwoReplicasCreatingTheLeaseAtOnceOneRetries) {
  FakeLease lease;
  Replica a(lease), b(lease);
  // b creates it between a's 404 and a's create: a gets 409 AlreadyExists, reads b's claim.
  lease.before_write = [&] {
    lease.stored(
        json{{"metadata",
              {{"name", "spark-gateway-running"},
               {"annotations", {{kAnnotation, format_running_claims({{"calm-otter", {at(0), at(60)}}})}}}}}});
  };
  EXPECT_TRUE(a.claim("brave-dolphin", 2));
  EXPECT_EQ(lease.conflicts, 1);
  EXPECT_EQ(lease.puts, 1) << "the second attempt updates the Lease b made";
  const auto claims = lease.claims();
  EXPECT_TRUE(claims.contains("calm-otter"));
  EXPECT_TRUE(claims.contains("brave-dolphin"));
}

TEST(RunningPlaces, OfTwoReplicasTakingTheLastPlaceOneIsRefused) {
  FakeLease lease;
  Replica a(lease), b(lease);
  a.views = b.views = {{"deep-work", {1, std::nullopt}}};
  ASSERT_TRUE(a.claim("brave-dolphin", 3));  // the Lease exists now: 2 of 3 taken
  // b read the Lease before a's next claim was written: its PUT conflicts, it reads again and
  // finds the last place gone.
  lease.before_write = [&] { EXPECT_TRUE(a.claim("calm-otter", 3)); };
  EXPECT_FALSE(b.claim("quick-fox", 3));
  EXPECT_EQ(lease.conflicts, 1);
  const auto claims = lease.claims();
  EXPECT_TRUE(claims.contains("calm-otter"));
  EXPECT_FALSE(claims.contains("quick-fox"));
}

TEST(RunningPlaces, RunningDeploymentsAndClaimsAreCountedOnce) {
  FakeLease lease;
  Replica a(lease);
  ASSERT_TRUE(a.claim("brave-dolphin", 2));
  a.views = {{"brave-dolphin", {1, std::nullopt}}};  // its wake shows now: still one place
  EXPECT_TRUE(a.claim("calm-otter", 2));
  a.views["calm-otter"] = {1, std::nullopt};
  EXPECT_FALSE(a.claim("quick-fox", 2));
  EXPECT_EQ(lease.puts, 1) << "a refusal writes nothing";
}

TEST(RunningPlaces, AClaimOfASleptDeploymentIsNotCounted) {
  FakeLease lease;
  Replica a(lease);
  ASSERT_TRUE(a.claim("brave-dolphin", 1));
  a.now = at(10);
  EXPECT_FALSE(a.claim("calm-otter", 1)) << "brave-dolphin's wake is on its way";
  // Its wake failed and was undone (or it ran and slept): `slept-at` after the claim.
  a.views = {{"brave-dolphin", {0, at(8)}}};
  EXPECT_TRUE(a.claim("calm-otter", 1));
  EXPECT_FALSE(lease.claims().contains("brave-dolphin")) << "the stale claim is dropped with the write";
}

TEST(RunningPlaces, ASleepWithinTheClockSlackOfTheClaimIsTheEarlierRuns) {
  const RunningClaim claim{at(10), at(70)};
  EXPECT_TRUE(claim_counts(claim, PlaceView{0, at(11)}, at(12))) << "may be the previous run's sleep";
  EXPECT_FALSE(claim_counts(claim, PlaceView{0, at(13)}, at(14)));
  EXPECT_TRUE(claim_counts(claim, std::nullopt, at(69))) << "a Deployment not seen yet: until `until`";
  EXPECT_FALSE(claim_counts(claim, std::nullopt, at(70)));
}

TEST(RunningPlaces, ExpiredClaimsAreDroppedAndStopCounting) {
  FakeLease lease;
  Replica a(lease);
  ASSERT_TRUE(a.claim("brave-dolphin", 1));
  a.now = at(61);  // past until: its wake never showed
  EXPECT_TRUE(a.claim("calm-otter", 1));
  const auto claims = lease.claims();
  EXPECT_FALSE(claims.contains("brave-dolphin"));
  EXPECT_TRUE(claims.contains("calm-otter"));
}

TEST(RunningPlaces, ARunningDeploymentCountsWhateverItsClaimSays) {
  FakeLease lease;
  Replica a(lease);
  ASSERT_TRUE(a.claim("brave-dolphin", 1));
  a.now = at(3600);  // its claim expired long ago, but it runs
  a.views = {{"brave-dolphin", {1, std::nullopt}}};
  EXPECT_FALSE(a.claim("calm-otter", 1));
}

TEST(RunningPlaces, ItsOwnCountingClaimKeepsItsPlaceWithoutAWrite) {
  FakeLease lease;
  Replica a(lease);
  ASSERT_TRUE(a.claim("brave-dolphin", 1));
  const int writes = lease.puts + lease.creates;
  EXPECT_TRUE(a.claim("brave-dolphin", 1));
  EXPECT_EQ(lease.puts + lease.creates, writes);
}

TEST(RunningPlaces, ItsOwnReplicaCountInTheCacheIsNotTrustedForItsWake) {
  // The cache still shows brave-dolphin at 1 (it was just put to sleep elsewhere; the wake read
  // 0 afresh): it claims like any other, so the others see its place taken.
  FakeLease lease;
  Replica a(lease);
  a.views = {{"brave-dolphin", {1, std::nullopt}}, {"calm-otter", {1, std::nullopt}}};
  EXPECT_FALSE(a.claim("brave-dolphin", 1));
  EXPECT_TRUE(a.claim("brave-dolphin", 2));
  EXPECT_TRUE(lease.claims().contains("brave-dolphin"));
}

TEST(RunningPlaces, ConflictsOnEveryAttemptEndInAConflictError) {
  FakeLease lease;
  Replica a(lease);
  ASSERT_TRUE(a.claim("brave-dolphin", 5));
  int writes_by_others = 0;
  std::function<void()> other = [&] {
    ++writes_by_others;
    json l = *lease.lease;
    l["metadata"]["annotations"]["touched"] = std::to_string(writes_by_others);
    lease.stored(l);
    lease.before_write = other;
  };
  lease.before_write = other;
  try {
    a.claim("calm-otter", 5);
    FAIL() << "no error";
  } catch (const ApiError& e) {
    EXPECT_TRUE(e.is_conflict());
    EXPECT_NE(std::string(e.what()).find("kept changing"), std::string::npos) << e.what();
  }
  EXPECT_EQ(writes_by_others, RunningPlaces::kAttempts);
}

TEST(RunningPlaces, OtherApiErrorsAreThrown) {
  FakeLease lease;
  lease.fail_get_with = 503;
  Replica a(lease);
  try {
    a.claim("brave-dolphin", 1);
    FAIL() << "no error";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.code(), 503);
    EXPECT_TRUE(e.is_transient());
  }
  EXPECT_EQ(lease.creates, 0) << "an error is not a 404: nothing created";
}

TEST(RunningPlaces, AnAnnotationThatDoesNotParseIsReplaced) {
  FakeLease lease;
  lease.stored(
      json{{"metadata",
            {{"name", "spark-gateway-running"}, {"annotations", {{kAnnotation, "garbage"}, {"other", "kept"}}}}}});
  Replica a(lease);
  EXPECT_TRUE(a.claim("brave-dolphin", 1));
  EXPECT_TRUE(lease.claims().contains("brave-dolphin"));
  EXPECT_EQ((*lease.lease)["metadata"]["annotations"]["other"], "kept")
      << "the rest of the Lease is left as it was";
}

}  // namespace
}  // namespace spark::k8s
