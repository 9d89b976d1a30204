#pragma once
// Picks the one replica that runs the idle reaper, with a coordination.k8s.io/v1 Lease, the way
// client-go's leaderelection package does: try to acquire every retry_period; a holder renews
// every retry_period; a Lease not renewed for lease_duration (as observed locally, so clocks
// need not agree) may be taken over. A leader that has not renewed for renew_deadline stops
// leading before its Lease can expire (lease_duration > renew_deadline), so two replicas never
// reap at once. On shutdown the Lease is released at once. Runs on its own thread.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <stop_token>
#include <thread>

#include "config/config.hpp"
#include "k8s/api_client.hpp"

namespace spark::k8s {

class LeaderElector {
 public:
  using Clock = std::chrono::steady_clock;
  // `on_change(leading)` runs on the elector's thread when leadership is gained or lost.
  LeaderElector(ApiClient& api, std::string namespace_name, config::LeaderElectionConfig cfg,
                std::function<void(bool)> on_change = {});
  ~LeaderElector();

  void start();
  // Stops trying; releases the Lease if held (bounded by the API client's request timeout).
  // Any thread, any number of times.
  void stop();

  // True while this replica holds the Lease and renewed it less than renew_deadline ago.
  bool is_leader() const;
  const std::string& identity() const { return cfg_.identity; }
  // The holder last seen in the Lease ("" if none): for /readyz and logs.
  std::string observed_holder() const;

 private:
  void run(std::stop_token stop);
  // One acquire-or-renew attempt (client-go's tryAcquireOrRenew); true if we hold the Lease.
  bool try_acquire_or_renew();
  void release();
  void set_leading(bool leading);
  json lease_body(const std::string& holder, int transitions, const std::string& acquire_time,
                  int duration_seconds) const;
  std::string lease_path() const;

  ApiClient& api_;
  std::string namespace_;
  config::LeaderElectionConfig cfg_;
  std::function<void(bool)> on_change_;

  mutable std::mutex mu_;
  std::condition_variable_any wake_;  // stop() cuts a wait short
  bool leading_ = false;
  Clock::time_point last_renew_{};
  // What we last saw in the Lease, and when it last changed (client-go's observedRecord/Time).
  std::string observed_spec_;
  std::string observed_holder_;
  Clock::time_point observed_time_{};
  std::mutex join_mu_;
  std::jthread thread_;
};

}  // namespace spark::k8s
