#include "k8s/running_places.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "activity/time_format.hpp"
#include "k8s/api_client.hpp"

namespace spark::k8s {

RunningClaims parse_running_claims(const std::string& text, std::vector<std::string>* problems) {
  RunningClaims out;
  const auto parsed = json::parse(text, nullptr, false);
  if (!parsed.is_object()) {
    if (problems) problems->push_back("not a JSON object");
    return out;
  }
  for (const auto& [name, value] : parsed.items()) {
    std::optional<PlaceTime> at, until;
    if (value.is_object() && value.contains("at") && value["at"].is_string() && value.contains("until") &&
        value["until"].is_string()) {
      at = activity::parse_rfc3339(value["at"].get<std::string>());
      until = activity::parse_rfc3339(value["until"].get<std::string>());
    }
    if (!at || !until) {
      if (problems) problems->push_back(name + ": " + value.dump());
      continue;
    }
    out[name] = RunningClaim{*at, *until};
  }
  return out;
}

std::string format_running_claims(const RunningClaims& claims) {
  json out = json::object();
  for (const auto& [name, claim] : claims)
    out[name] = {{"at", activity::format_rfc3339(claim.at)}, {"until", activity::format_rfc3339(claim.until)}};
  return out.dump();
}

bool claim_counts(const RunningClaim& claim, const std::optional<PlaceView>& view, PlaceTime now) {
  if (now >= claim.until) return false;
  // Put to sleep after the claim: the wake it stood for failed and was undone, or the spark ran
  // and slept since. Either way that place is free again.
  if (view && view->slept_at && *view->slept_at > claim.at + kClaimClockSlack) return false;
  return true;
}

PlaceDecision decide_place(const RunningClaims& claims, const PlaceViews& views, const std::string& deployment,
                           int max_running, PlaceTime now, std::chrono::milliseconds hold_for) {
  PlaceDecision out;
  std::set<std::string> taken;
  for (const auto& [name, view] : views)
    if (view.replicas >= 1 && name != deployment) taken.insert(name);
  bool holds = false;
  for (const auto& [name, claim] : claims) {
    const auto it = views.find(name);
    const auto view = it == views.end() ? std::nullopt : std::optional<PlaceView>(it->second);
    if (!claim_counts(claim, view, now)) continue;  // stale: dropped with the next write
    out.claims[name] = claim;
    if (name == deployment)
      holds = true;
    else
      taken.insert(name);
  }
  out.taken.assign(taken.begin(), taken.end());
  if (holds) {
    out.verdict = PlaceDecision::Verdict::holds;
    return out;
  }
  if (static_cast<int>(taken.size()) >= max_running) {
    out.verdict = PlaceDecision::Verdict::full;
    return out;
  }
  out.verdict = PlaceDecision::Verdict::take;
  out.claims[deployment] = RunningClaim{now, now + hold_for};
  return out;
}

RunningPlaces::RunningPlaces(LeaseApi api, std::string namespace_name, std::string lease_name,
                             std::string claims_annotation, std::function<PlaceViews()> views,
                             std::function<PlaceTime()> now)
    : api_(std::move(api)),
      namespace_(std::move(namespace_name)),
      lease_name_(std::move(lease_name)),
      annotation_(std::move(claims_annotation)),
      views_(std::move(views)),
      now_(std::move(now)) {}

json RunningPlaces::new_lease(const std::string& claims_text) const {
  // No holder, no duration: this Lease elects nobody, it is only the one object every replica
  // writes with a precondition (a Lease because the gateway may write Leases anyway).
  return {{"apiVersion", "coordination.k8s.io/v1"},
          {"kind", "Lease"},
          {"metadata",
           {{"name", lease_name_}, {"namespace", namespace_}, {"annotations", {{annotation_, claims_text}}}}},
          {"spec", json::object()}};
}

bool RunningPlaces::claim(const std::string& deployment, int max_running, std::chrono::milliseconds hold_for) {
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    std::optional<json> lease;
    try {
      lease = api_.get();
    } catch (const ApiError& e) {
      if (!e.is_not_found()) throw;
    }
    RunningClaims claims;
    if (lease) {
      const auto annotations = lease->value("/metadata/annotations"_json_pointer, json::object());
      const auto it = annotations.find(annotation_);
      if (it != annotations.end() && it->is_string()) {
        std::vector<std::string> problems;
        claims = parse_running_claims(it->get<std::string>(), &problems);
        for (const auto& p : problems)
          spdlog::warn("Lease {}: annotation {}: ignoring a claim that does not parse: {}", lease_name_,
                       annotation_, p);
      }
    }
    // Read after the Lease: a scale-up that shows here but was not claimed yet when we read
    // the Lease is counted, never the other way round.
    const auto views = views_();
    const auto decision = decide_place(claims, views, deployment, max_running, now_(), hold_for);
    if (decision.verdict == PlaceDecision::Verdict::holds) return true;
    if (decision.verdict == PlaceDecision::Verdict::full) {
      std::string who;
      for (const auto& name : decision.taken) who += (who.empty() ? "" : ", ") + name;
      spdlog::debug("spark {}: every place under limits.max_running {} is taken ({}; Lease {})", deployment,
                    max_running, who, lease_name_);
      return false;
    }
    const std::string text = format_running_claims(decision.claims);
    try {
      if (lease) {
        json body = *lease;  // the resourceVersion read: a compare-and-swap
        body["metadata"]["annotations"][annotation_] = text;
        api_.replace(body);
      } else {
        api_.create(new_lease(text));  // two replicas creating it: one gets 409 AlreadyExists
      }
    } catch (const ApiError& e) {
      if (!e.is_conflict()) throw;
      spdlog::debug("spark {}: Lease {} changed while claiming a running place (attempt {}): {}", deployment,
                    lease_name_, attempt, e.what());
      continue;  // another replica wrote first: read its claims and decide again
    }
    spdlog::info("spark {}: claimed a running place in Lease {} ({} of limits.max_running {} taken before)",
                 deployment, lease_name_, decision.taken.size(), max_running);
    return true;
  }
  throw ApiError(409, "Conflict",
                 "Lease " + namespace_ + "/" + lease_name_ + " kept changing while claiming a running place for " +
                     deployment + " (" + std::to_string(kAttempts) + " attempts)");
}

}  // namespace spark::k8s
