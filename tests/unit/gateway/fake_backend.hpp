#pragma once
// A fake backend for Spark tests: its "sshd" is a real loopback acceptor that only starts
// listening when the fake is woken. Shared by spark_wake_test and spark_model_test.
#include <atomic>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "gateway/asio.hpp"
#include "gateway/backend/backend.hpp"

namespace spark::gateway {

// Shared between the test and the FakeBackend the Spark owns. Knobs are set by the test before
// the spark acts on them; counters and flags are read and written from the pool threads.
struct FakeControl {
  // Knobs.
  int wake_throws_times = 0;                              // the first N wake() calls throw BackendError
  std::string wake_error = "boom";                        // ... with this message
  bool listen_on_wake = true;                             // false: the target never listens
  std::optional<std::string> failed_reason;               // observe() reports failed with this once started
  std::optional<std::shared_future<void>> sleep_gate;     // sleep() blocks until it is ready
  int sleep_declines_times = 0;                           // the first N sleep() calls throw SleepDeclined
  std::string sleep_decline_reason = "in use elsewhere";  // ... with this message
  bool shares_activity = false;                           // shares_activity(): other gateways serve it too
  int claim_refuses_times = 0;                            // the first N claim_place() calls return false

  // What happened.
  std::atomic<int> wakes{0};
  std::atomic<int> sleeps_begun{0};
  std::atomic<int> sleeps_done{0};
  std::atomic<bool> started{false};
  std::atomic<bool> sleep_in_progress{false};
  std::atomic<bool> wake_overlapped_sleep{false};
  std::atomic<int> sleeps_declined{0};
  std::atomic<int> claims{0};             // claim_place() calls
  std::atomic<int> claim_max_running{0};  // ... and the cap the last one was asked under

  std::mutex mu;
  std::vector<std::string> log;              // "wake", "wake-failed", "sleep-begin", "sleep-end", "sleep-declined"
  std::vector<WakeRequest> wake_requests;    // every wake() call, as the backend saw it
  std::vector<SleepRequest> sleep_requests;  // every sleep() call, declined ones too
  tcp::acceptor* acceptor = nullptr;
  config::Address address;

  void record(const std::string& what) {
    std::lock_guard lock(mu);
    log.push_back(what);
  }
  std::vector<std::string> events() {
    std::lock_guard lock(mu);
    return log;
  }
  std::vector<WakeRequest> wakes_seen() {
    std::lock_guard lock(mu);
    return wake_requests;
  }
  std::vector<SleepRequest> sleeps_seen() {
    std::lock_guard lock(mu);
    return sleep_requests;
  }
};

class FakeBackend final : public Backend {
 public:
  explicit FakeBackend(std::shared_ptr<FakeControl> c) : c_(std::move(c)) {}

  std::string_view kind() const override { return "fake"; }

  void wake(const WakeRequest& request) override {
    {
      std::lock_guard lock(c_->mu);
      c_->wake_requests.push_back(request);
    }
    const int n = ++c_->wakes;
    if (c_->sleep_in_progress) c_->wake_overlapped_sleep = true;
    if (n <= c_->wake_throws_times) {
      c_->record("wake-failed");
      throw BackendError(c_->wake_error);
    }
    if (c_->listen_on_wake) {
      std::lock_guard lock(c_->mu);
      error_code ec;
      c_->acceptor->listen(asio::socket_base::max_listen_connections, ec);
      if (ec) throw BackendError("listen: " + ec.message());
    }
    c_->started = true;
    c_->record("wake");
  }

  void sleep(const SleepRequest& request) override {
    {
      std::lock_guard lock(c_->mu);
      c_->sleep_requests.push_back(request);
    }
    if (c_->sleeps_declined < c_->sleep_declines_times) {
      ++c_->sleeps_declined;
      c_->record("sleep-declined");
      throw SleepDeclined(c_->sleep_decline_reason);
    }
    c_->sleep_in_progress = true;
    ++c_->sleeps_begun;
    c_->record("sleep-begin");
    if (c_->sleep_gate) c_->sleep_gate->wait();
    c_->started = false;
    c_->record("sleep-end");
    c_->sleep_in_progress = false;
    ++c_->sleeps_done;
  }

  Observation observe() const override {
    if (!c_->started) return {Observation::State::asleep, std::nullopt, {}};
    if (c_->failed_reason) return {Observation::State::failed, std::nullopt, *c_->failed_reason};
    return {Observation::State::started, c_->address, {}};
  }

  bool may_run_without_us() const override { return false; }

  bool shares_activity() const override { return c_->shares_activity; }

  bool claim_place(int max_running) override {
    const int n = ++c_->claims;
    c_->claim_max_running = max_running;
    return n > c_->claim_refuses_times;
  }

 private:
  std::shared_ptr<FakeControl> c_;
};

}  // namespace spark::gateway
