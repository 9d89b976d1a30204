#include "gateway/jump/startup_gate.hpp"

#include <algorithm>
#include <random>

#include "config/duration.hpp"

namespace spark::gateway {
namespace {

std::string max_startups_text(const config::MaxStartups& m) {
  return std::to_string(m.start) + ":" + std::to_string(m.rate) + ":" + std::to_string(m.full);
}

std::string duration_text(StartupGate::Clock::duration d) {
  const std::chrono::milliseconds seconds = std::chrono::round<std::chrono::seconds>(d);
  return config::format_duration(std::max(std::chrono::milliseconds(1000), seconds));
}

}  // namespace

std::string_view to_string(StartupGate::End end) {
  switch (end) {
    case StartupGate::End::logged_in: return "logged in";
    case StartupGate::End::authfail: return "failed to log in";
    case StartupGate::End::noauth: return "ended without logging in";
    case StartupGate::End::grace_exceeded: return "outlived login_grace";
    case StartupGate::End::evicted: return "made room for another source";
    case StartupGate::End::dropped: return "closed by the gateway";
  }
  return "ended";
}

StartupGate::StartupGate(config::MaxStartups startups, config::SourcePenalties penalties, int max_sessions,
                         Random random)
    : startups_(startups), penalty_cfg_(penalties), max_sessions_(max_sessions), random_(std::move(random)) {
  if (!random_) {
    random_ = [engine = std::minstd_rand(std::random_device{}())]() mutable {
      return std::uniform_real_distribution<double>(0.0, 1.0)(engine);
    };
  }
}

double StartupGate::drop_probability(int unauthenticated) const {
  if (unauthenticated < startups_.start) return 0.0;
  if (unauthenticated >= startups_.full) return 1.0;
  // OpenSSH's drop_connection(): rate% at start, rising linearly to 100% at full.
  const double rate = startups_.rate / 100.0;
  return rate + (1.0 - rate) * (unauthenticated - startups_.start) / (startups_.full - startups_.start);
}

int StartupGate::unauthenticated_from(const Source& from) const {
  const auto it = per_source_.find(from);
  return it == per_source_.end() ? 0 : it->second;
}

std::optional<StartupGate::Source> StartupGate::heavier_than(const Source& from) const {
  const Source* heaviest = nullptr;
  int most = 0;
  for (const auto& [source, n] : per_source_) {
    if (n > most) {
      most = n;
      heaviest = &source;
    }
  }
  if (!heaviest || most < unauthenticated_from(from) + 2) return std::nullopt;
  return *heaviest;
}

StartupGate::Decision StartupGate::refuse_or_evict(const Source& from, std::string why) const {
  if (auto victim = heavier_than(from)) return {Decision::Kind::admit_after_eviction, {}, *victim, false};
  return {Decision::Kind::refuse, std::move(why), {}, false};
}

std::optional<StartupGate::Clock::duration> StartupGate::penalty_left(const Source& from, Clock::time_point now) const {
  const auto it = penalties_.find(from);
  if (it == penalties_.end() || !it->second.active || it->second.until <= now) return std::nullopt;
  return it->second.until - now;
}

StartupGate::Decision StartupGate::decide(const Source& from, int logged_in, Clock::time_point now) {
  if (penalty_cfg_.enabled) {
    if (const auto left = penalty_left(from, now)) {
      return {Decision::Kind::refuse,
              "penalized for " + duration_text(*left) + " more (its connections failed to log in; "
              "jump.per_source_penalties)",
              {}, true};
    }
  }
  if (unauthenticated_ + logged_in >= max_sessions_)
    return refuse_or_evict(from, "max_sessions (" + std::to_string(max_sessions_) + ") reached");
  const double p = drop_probability(unauthenticated_);
  if (p > 0.0 && (p >= 1.0 || random_() < p)) {
    return refuse_or_evict(from, std::to_string(unauthenticated_) + " connections not logged in yet (max_startups " +
                                     max_startups_text(startups_) + ")");
  }
  return {};
}

void StartupGate::started(const Source& from) {
  ++unauthenticated_;
  ++per_source_[from];
}

void StartupGate::forget_expired(Clock::time_point now) {
  std::erase_if(penalties_, [now](const auto& entry) { return entry.second.until <= now; });
}

bool StartupGate::ended(const Source& from, End how, Clock::time_point now) {
  if (auto it = per_source_.find(from); it != per_source_.end()) {
    --unauthenticated_;
    if (--it->second <= 0) per_source_.erase(it);
  }
  if (!penalty_cfg_.enabled) return false;
  if ((++ends_ & 1023) == 0) forget_expired(now);  // the table holds only live penalties, mostly
  config::Duration add{0};
  switch (how) {
    case End::logged_in:
    case End::dropped: return false;
    case End::authfail: add = penalty_cfg_.authfail; break;
    case End::noauth:
    case End::evicted: add = penalty_cfg_.noauth; break;
    case End::grace_exceeded: add = penalty_cfg_.grace_exceeded; break;
  }
  if (add <= config::Duration(0)) return false;
  auto it = penalties_.find(from);
  if (it == penalties_.end()) {
    if (penalties_.size() >= kMaxPenalizedSources) forget_expired(now);
    if (penalties_.size() >= kMaxPenalizedSources) return false;  // permissive: unrecorded
    it = penalties_.emplace(from, Penalty{now, false}).first;
  }
  Penalty& p = it->second;
  if (p.until < now) p = Penalty{now, false};  // an old penalty that ran out starts over
  p.until = std::min(p.until + add, now + penalty_cfg_.max);
  if (!p.active && p.until - now > penalty_cfg_.min) {
    p.active = true;
    return true;
  }
  return false;
}

}  // namespace spark::gateway
