#include "gateway/activity_flusher.hpp"

#include <spdlog/spdlog.h>

namespace spark::gateway {

ActivityFlusher::ActivityFlusher(asio::thread_pool& control_pool, activity::ActivityTracker& activity,
                                 Metrics& metrics, const std::filesystem::path& state_dir)
    : control_pool_(control_pool), activity_(activity), metrics_(metrics), store_(state_dir) {
  metrics_.expose_persist_store("state_file");
}

void ActivityFlusher::restore() {
  try {
    activity_.restore(store_.load());
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
  }
}

void ActivityFlusher::share_through(k8s::ActivityAnnotations& annotations,
                                    std::function<std::set<std::string>()> shared) {
  annotations_ = &annotations;
  shared_ = std::move(shared);
}

awaitable<void> ActivityFlusher::run(std::function<std::chrono::milliseconds()> interval) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (!stopping_) {
    timer.expires_after(interval());
    co_await timer.async_wait(use_awaitable);
    if (stopping_) co_return;
    // Shared sparks' sessions are refreshed by their Spark: refreshing them here too would
    // write them twice.
    activity_.refresh_open(std::chrono::system_clock::now(), shared_ ? shared_() : std::set<std::string>{});
    if (!activity_.dirty() && !annotations_behind_) continue;
    auto snapshot = activity_.snapshot();
    try {
      const auto save = [this, snapshot] { store_.save(snapshot); };
      co_await run_blocking(control_pool_, save);
      activity_.mark_persisted(snapshot);
    } catch (const std::exception& e) {
      // Kept in memory and retried at the next flush: nothing is lost while the gateway runs.
      spdlog::error("cannot persist activity (will retry): {}", e.what());
      metrics_.count_persist_failure("state_file");
    }
    if (annotations_) {
      const auto names = shared_();
      const auto publish = [this, snapshot, names] { return annotations_->publish(snapshot, names); };
      const int failed = co_await run_blocking(control_pool_, publish);
      for (int i = 0; i < failed; ++i) metrics_.count_persist_failure("kubernetes");
      annotations_behind_ = failed > 0;
    }
  }
}

void ActivityFlusher::flush_now() {
  activity_.refresh_open(std::chrono::system_clock::now());
  auto snapshot = activity_.snapshot();
  if (annotations_) annotations_->publish(snapshot, shared_());
  try {
    store_.save(snapshot);
    activity_.mark_persisted(snapshot);
  } catch (const std::exception& e) {
    spdlog::error("cannot persist activity at shutdown: {}", e.what());
  }
}

bool ActivityFlusher::share_hold_now(const activity::ActivitySnapshot& snapshot, const std::string& spark) {
  return !annotations_ || annotations_->publish(snapshot, {spark}) == 0;
}

}  // namespace spark::gateway
