#pragma once
// limits.max_running across gateway replicas. Each replica counts the spark Deployments its watch
// shows at replicas >= 1, but a watch lags behind another replica's write: two replicas could
// both see one free place and both wake a spark. So before a wake takes a place, it claims it in
// one coordination.k8s.io/v1 Lease every replica writes (leader_election.running_lease), with a
// resourceVersion precondition: of two replicas taking the last place, one gets 409 Conflict,
// reads the other's claim and finds every place taken.
//
// The claims are the Lease's annotation `<annotation_prefix>running-claims`, a JSON object
// {"brave-dolphin": {"at": RFC 3339, "until": RFC 3339}}. A claim stands for a wake on its way:
// it counts until the Deployment's scale-up shows in the watches (then the Deployment counts by
// itself), and goes stale when its Deployment was put to sleep after it (`slept-at` newer than
// the claim: the wake failed, or the spark has run and slept since) or at `until` (the claim's
// wake_timeout and a margin: a wake that never came). `until` is written by the claimer, so
// replicas with other wake timeouts judge every claim alike.
//
// Places taken = the sparks' Deployments at replicas >= 1 (the cache, or a fresh list while the
// watch reconnects) together with the counting claims, each Deployment once.
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace spark::k8s {

using PlaceTime = std::chrono::system_clock::time_point;

struct RunningClaim {
  PlaceTime at;     // when it was claimed (the claimer's clock)
  PlaceTime until;  // when it stops counting, whatever happened
  friend bool operator==(const RunningClaim&, const RunningClaim&) = default;
};
using RunningClaims = std::map<std::string, RunningClaim>;  // Deployment name -> its claim

// What the gateway knows of one spark Deployment for counting places.
struct PlaceView {
  int replicas = 0;
  std::optional<PlaceTime> slept_at;  // its `slept-at` annotation
};
using PlaceViews = std::map<std::string, PlaceView>;

// The annotation's text -> claims; entries that do not parse are left out (with `problems`
// naming them, if given). Text that is not a JSON object is no claims.
RunningClaims parse_running_claims(const std::string& text, std::vector<std::string>* problems = nullptr);
std::string format_running_claims(const RunningClaims& claims);

// A clock difference between replicas that a `slept-at` must exceed to make a claim stale: a
// sleep recorded this close after a claim may be the previous run's (the claim keeps counting
// until `until` then, the safe side).
inline constexpr std::chrono::seconds kClaimClockSlack{2};

// Whether `claim` still stands for a wake on its way (see above), given its Deployment's view
// (nullopt: not among the sparks, or not seen yet).
bool claim_counts(const RunningClaim& claim, const std::optional<PlaceView>& view, PlaceTime now);

struct PlaceDecision {
  enum class Verdict {
    holds,  // the Deployment already holds a counting claim: nothing to write
    full,   // every place is taken by others
    take,   // write `claims` (the counting ones, and this Deployment's, new)
  };
  Verdict verdict = Verdict::full;
  RunningClaims claims;
  std::vector<std::string> taken;  // the Deployments holding places (others than this one), sorted
};

// The decision for `deployment` wanting one of `max_running` places at `now`, its claim to hold
// for `hold_for`. Only a counting claim of its own keeps its place: a replica count of 1 in the
// cache is not trusted for the Deployment about to be woken (the wake read it afresh and found 0).
PlaceDecision decide_place(const RunningClaims& claims, const PlaceViews& views, const std::string& deployment,
                           int max_running, PlaceTime now, std::chrono::milliseconds hold_for);

class RunningPlaces {
 public:
  // The Lease's API calls; they throw ApiError (404 from get when there is no Lease yet).
  struct LeaseApi {
    std::function<nlohmann::json()> get;
    std::function<nlohmann::json(const nlohmann::json& lease)> create;   // POST
    std::function<nlohmann::json(const nlohmann::json& lease)> replace;  // PUT, resourceVersion as read
  };
  // `views` answers what the spark Deployments show (may throw ApiError).
  RunningPlaces(
      LeaseApi api, std::string namespace_name, std::string lease_name, std::string claims_annotation,
      std::function<PlaceViews()> views,
      std::function<PlaceTime()> now = [] { return std::chrono::system_clock::now(); });

  // Takes one of `max_running` places for `deployment`, its claim holding for `hold_for`.
  // Blocking (runs on the control pool). True: the place is the Deployment's; false: every place
  // is taken. Throws ApiError when it cannot tell (an API error, or the Lease kept changing under
  // it: 409 after kAttempts reads).
  bool claim(const std::string& deployment, int max_running, std::chrono::milliseconds hold_for);

  static constexpr int kAttempts = 6;

 private:
  nlohmann::json new_lease(const std::string& claims_text) const;

  LeaseApi api_;
  std::string namespace_;
  std::string lease_name_;
  std::string annotation_;
  std::function<PlaceViews()> views_;
  std::function<PlaceTime()> now_;
};

}  // namespace spark::k8s
