#include "gateway/spark_set.hpp"

#include <spdlog/spdlog.h>

#include "config/duration.hpp"
#include "config/plural.hpp"
#include "gateway/make_backend.hpp"

namespace spark::gateway {

void SparkSet::apply(const config::Config& next, bool from_discovery) {
  // Listeners first: nothing changes if one cannot be opened (throws).
  FrontDoor::Plan listeners;
  const auto served = plan(next, listeners);
  const auto changes = update(served, next);
  front_door_.adopt(std::move(listeners), served, sparks_);
  cap_.configure(next.max_running, next.evict_idle_after);
  log_changes(changes, next, from_discovery);
}

std::vector<config::SparkConfig> SparkSet::plan(const config::Config& next, FrontDoor::Plan& listeners) {
  std::vector<config::SparkConfig> served;
  for (const auto& s : next.sparks) {
    front_door_.claim(listeners, s);
    served.push_back(s);
  }
  // Discovered sparks: one that cannot listen is left out (and said so once), not fatal.
  for (const auto& s : discovered_) {
    if (next.find_spark(s.name)) {
      if (unbindable_.insert(s.name + " (name)").second)
        spdlog::error("spark {}: a Deployment and a configured spark have this name; serving the configured one",
                      s.name);
      continue;
    }
    try {
      front_door_.claim(listeners, s);
      served.push_back(s);
      unbindable_.erase(s.name);
    } catch (const std::exception& e) {
      if (!unbindable_.insert(s.name).second) continue;
      spdlog::error("{}; not served", e.what());
      if (report_unbindable_) report_unbindable_(s, e.what());
    }
  }
  return served;
}

SparkSet::Changes SparkSet::update(const std::vector<config::SparkConfig>& served, const config::Config& next) {
  const auto now = std::chrono::system_clock::now();
  std::map<std::string, std::shared_ptr<Spark>> sparks;
  Changes changes;
  for (const auto& s : served) {
    activity_.ensure(s.name, now);
    if (auto it = sparks_.find(s.name); it != sparks_.end()) {
      if (!(it->second->config() == s)) changes.changed.push_back(s.name);
      it->second->update(s, make_backend(s, next, cluster_));
      sparks[s.name] = it->second;
      continue;
    }
    const SparkEnvironment env{io_.get_executor(),
                               control_pool_,
                               activity_,
                               &metrics_,
                               std::chrono::duration_cast<std::chrono::milliseconds>(next.activity_flush_interval),
                               &cap_};
    auto spark = std::make_shared<Spark>(env, s, make_backend(s, next, cluster_));
    asio::co_spawn(io_, spark->adopt_if_running(), asio::detached);
    sparks[s.name] = std::move(spark);
    changes.added.push_back(s.name);
  }
  for (auto& [name, spark] : sparks_) {
    if (sparks.contains(name)) continue;
    changes.removed.push_back(name);
    spark->retire();  // open sessions finish; then it is stopped
  }
  sparks_ = std::move(sparks);
  return changes;
}

void SparkSet::log_changes(const Changes& changes, const config::Config& next, bool from_discovery) const {
  for (const auto& name : changes.added) {
    const auto& s = sparks_.at(name)->config();
    spdlog::info("spark {}: listening on {} ({} backend, target {}, idle timeout {})", name, s.listen.to_string(),
                 s.backend_kind(), s.target().to_string(),
                 s.idle_timeout.is_never() ? "never" : config::format_duration(*s.idle_timeout.value));
  }
  // Discovery passes run on every Deployment change (annotation writes too): said only when
  // something changed.
  if (from_discovery && !changes.any()) return;
  const auto join = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
    return out.empty() ? "-" : out;
  };
  const auto summary = config::counted(sparks_.size(), "spark") + " (added " + join(changes.added) + ", changed " +
                       join(changes.changed) + ", removed " + join(changes.removed) + ")";
  if (from_discovery)
    spdlog::info("kubernetes: discovered sparks changed: serving {}", summary);
  else
    spdlog::info("config {}: {}", next.source.string(), summary);
}

std::shared_ptr<Spark> SparkSet::find(const std::string& name) const {
  const auto it = sparks_.find(name);
  return it == sparks_.end() ? nullptr : it->second;
}

int SparkSet::waiting_for_wakes() const {
  int waiting = 0;
  for (const auto& [name, s] : sparks_) waiting += s->waiting_connections();
  return waiting;
}

std::vector<config::SparkConfig> SparkSet::discovered_served() const {
  std::vector<config::SparkConfig> served;
  for (const auto& s : discovered_)
    if (const auto it = sparks_.find(s.name); it != sparks_.end() && it->second->config() == s)
      served.push_back(s);
  return served;
}

std::set<std::string> SparkSet::discovered_names() const {
  std::set<std::string> names;
  for (const auto& s : discovered_) names.insert(s.name);
  return names;
}

void SparkSet::reap(activity::TimePoint now, bool leading) {
  for (auto& [name, spark] : sparks_) {
    if (!leading && spark->shared_with_other_gateways()) continue;
    spark->reap_if_idle(now);
  }
}

void SparkSet::follow(activity::TimePoint now) {
  for (auto& [name, spark] : sparks_) {
    spark->follow_backend(now);
    spark->share_activity_if_due(now);
  }
  cap_.changed();
}

awaitable<void> SparkSet::stop_children() {
  // Children never outlive the gateway; sparks managed elsewhere (exec) keep running.
  for (auto& [name, spark] : sparks_)
    if (spark->stops_with_gateway()) co_await spark->sleep(SleepReason::shutdown);
}

}  // namespace spark::gateway
