#include "k8s/leader_election.hpp"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <ctime>
#include <random>

namespace spark::k8s {
namespace {

// Lease times are MicroTime: RFC 3339 with microseconds, UTC.
std::string micro_time_now() {
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::system_clock::to_time_t(now);
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() % 1000000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(micros < 0 ? 0 : micros));
  return buf;
}

int whole_seconds(config::Duration d) {
  return static_cast<int>(std::max<long long>(1, std::chrono::duration_cast<std::chrono::seconds>(d).count()));
}

}  // namespace

LeaderElector::LeaderElector(ApiClient& api, std::string namespace_name, config::LeaderElectionConfig cfg,
                             std::function<void(bool)> on_change)
    : api_(api), namespace_(std::move(namespace_name)), cfg_(std::move(cfg)), on_change_(std::move(on_change)) {}

LeaderElector::~LeaderElector() { stop(); }

void LeaderElector::start() { thread_ = std::jthread([this](std::stop_token stop) { run(stop); }); }

void LeaderElector::stop() {
  thread_.request_stop();
  // Shutdown calls this from the control pool and the destructor from the main thread: the
  // second caller waits for the first's join.
  std::lock_guard join_lock(join_mu_);
  if (thread_.joinable()) thread_.join();
}

bool LeaderElector::is_leader() const {
  std::lock_guard lock(mu_);
  return leading_ && Clock::now() - last_renew_ < cfg_.renew_deadline;
}

std::string LeaderElector::observed_holder() const {
  std::lock_guard lock(mu_);
  return observed_holder_;
}

std::string LeaderElector::lease_path() const {
  return "/apis/coordination.k8s.io/v1/namespaces/" + namespace_ + "/leases/" + cfg_.lease_name;
}

json LeaderElector::lease_body(const std::string& holder, int transitions, const std::string& acquire_time,
                               int duration_seconds) const {
  return {{"apiVersion", "coordination.k8s.io/v1"},
          {"kind", "Lease"},
          {"metadata", {{"name", cfg_.lease_name}, {"namespace", namespace_}}},
          {"spec",
           {{"holderIdentity", holder},
            {"leaseDurationSeconds", duration_seconds},
            {"acquireTime", acquire_time},
            {"renewTime", micro_time_now()},
            {"leaseTransitions", transitions}}}};
}

void LeaderElector::set_leading(bool leading) {
  {
    std::lock_guard lock(mu_);
    if (leading) last_renew_ = Clock::now();
    if (leading_ == leading) return;
    leading_ = leading;
  }
  if (leading)
    spdlog::info("leader election: {} now leads (Lease {}/{}): this replica runs the idle reaper", cfg_.identity,
                 namespace_, cfg_.lease_name);
  else
    spdlog::warn("leader election: {} no longer leads (Lease {}/{}): idle reaping stops here", cfg_.identity,
                 namespace_, cfg_.lease_name);
  if (on_change_) on_change_(leading);
}

bool LeaderElector::try_acquire_or_renew() {
  const auto now = Clock::now();
  json lease;
  try {
    lease = api_.get(lease_path());
  } catch (const ApiError& e) {
    if (!e.is_not_found()) throw;
    auto body = lease_body(cfg_.identity, 0, micro_time_now(), whole_seconds(cfg_.lease_duration));
    api_.post("/apis/coordination.k8s.io/v1/namespaces/" + namespace_ + "/leases", body);
    std::lock_guard lock(mu_);
    observed_spec_ = body["spec"].dump();
    observed_holder_ = cfg_.identity;
    observed_time_ = now;
    return true;
  }
  const json spec = lease.value("spec", json::object());
  const std::string holder = spec.value("holderIdentity", "");
  const int transitions = spec.value("leaseTransitions", 0);
  const int duration = spec.value("leaseDurationSeconds", whole_seconds(cfg_.lease_duration));
  bool expired = false;
  {
    std::lock_guard lock(mu_);
    // Expiry is judged by when *we* saw the record last change, not by its renewTime: the
    // replicas' clocks need not agree (client-go does the same).
    if (spec.dump() != observed_spec_) {
      observed_spec_ = spec.dump();
      observed_time_ = now;
    }
    observed_holder_ = holder;
    expired = now >= observed_time_ + std::chrono::seconds(duration);
  }
  if (!holder.empty() && holder != cfg_.identity && !expired) return false;

  const bool ours = holder == cfg_.identity;
  auto body = lease_body(cfg_.identity, ours ? transitions : transitions + 1,
                         ours ? spec.value("acquireTime", micro_time_now()) : micro_time_now(),
                         whole_seconds(cfg_.lease_duration));
  // The resourceVersion makes this a compare-and-swap: of two replicas taking an expired Lease,
  // one gets 409 Conflict.
  body["metadata"]["resourceVersion"] = lease["metadata"].value("resourceVersion", "");
  try {
    api_.put(lease_path(), body);
  } catch (const ApiError& e) {
    if (e.is_conflict()) return false;
    throw;
  }
  if (!ours)
    spdlog::info("leader election: {} took Lease {} over from {}", cfg_.identity, cfg_.lease_name,
                 holder.empty() ? "nobody" : holder);
  std::lock_guard lock(mu_);
  observed_spec_ = body["spec"].dump();
  observed_holder_ = cfg_.identity;
  observed_time_ = now;
  return true;
}

void LeaderElector::release() {
  try {
    const auto lease = api_.get(lease_path());
    const json spec = lease.value("spec", json::object());
    if (spec.value("holderIdentity", "") != cfg_.identity) return;
    // As client-go's ReleaseOnCancel: no holder, a 1 s duration; the next replica takes it at once.
    auto body = lease_body("", spec.value("leaseTransitions", 0), micro_time_now(), 1);
    body["metadata"]["resourceVersion"] = lease["metadata"].value("resourceVersion", "");
    api_.put(lease_path(), body);
    spdlog::info("leader election: {} released Lease {}", cfg_.identity, cfg_.lease_name);
  } catch (const std::exception& e) {
    spdlog::warn("leader election: cannot release Lease {}: {} (it expires by itself)", cfg_.lease_name, e.what());
  }
}

void LeaderElector::run(std::stop_token stop) {
  std::mt19937 rng{std::random_device{}()};
  std::uniform_real_distribution<double> jitter(1.0, 1.2);  // client-go's JitterFactor 1.2
  std::string last_error;
  for (;;) {
    bool held = false;
    try {
      held = try_acquire_or_renew();
      last_error.clear();
    } catch (const std::exception& e) {
      if (e.what() != last_error) spdlog::warn("leader election: Lease {}: {}", cfg_.lease_name, e.what());
      last_error = e.what();
    }
    if (held) {
      set_leading(true);
    } else {
      bool lost = false;
      {
        std::lock_guard lock(mu_);
        lost = leading_ && Clock::now() - last_renew_ >= cfg_.renew_deadline;
      }
      // Not renewed within renew_deadline: give up before the Lease can expire for others.
      if (lost) set_leading(false);
    }
    std::unique_lock lock(mu_);
    const auto wait = std::chrono::duration_cast<Clock::duration>(cfg_.retry_period * jitter(rng));
    wake_.wait_for(lock, stop, wait, [] { return false; });
    if (stop.stop_requested()) break;
  }
  const bool was_leading = [this] {
    std::lock_guard lock(mu_);
    return leading_;
  }();
  if (was_leading) {
    set_leading(false);
    release();
  }
}

}  // namespace spark::k8s
