#pragma once
// The one seam between the gateway and whatever runs a spark. The gateway asks a backend
// to wake or sleep a spark and observes it; it never knows whether a local child, a user's
// command or a Kubernetes Deployment is behind it.
#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "config/address.hpp"

namespace spark::gateway {

// A failed wake or sleep; what() is the reason shown to operators. A transient one (the API
// server overloaded or unreachable for a moment) is worth retrying while time remains;
// `retry_after` is how long the other side asked us to wait (zero: our own backoff).
class BackendError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  BackendError(const std::string& what, bool transient, std::chrono::milliseconds retry_after = {})
      : std::runtime_error(what), transient_(transient), retry_after_(retry_after) {}
  bool transient() const { return transient_; }
  std::chrono::milliseconds retry_after() const { return retry_after_; }

 private:
  bool transient_ = false;
  std::chrono::milliseconds retry_after_{};
};

// A sleep the backend decided against: someone was active since the gateway decided (another
// gateway replica's session, a keep-awake). Not a failure: the spark is in use.
class SleepDeclined : public BackendError {
 public:
  using BackendError::BackendError;
};

// Why a spark is woken; backends that keep a record (Kubernetes Events) tell the story with it.
struct WakeRequest {
  std::chrono::milliseconds timeout{};
  std::string cause;  // "a connection from 100.101.102.103", "an operator (admin API)"
  // The activity that causes the wake. A backend shared with other gateways records it with
  // the wake, so that none of them takes the freshly woken spark for an idle one.
  std::chrono::system_clock::time_point activity_at{};
};

// Why a spark is put to sleep, and what the decision was based on.
struct SleepRequest {
  std::string reason;       // idle, api, shutdown, removed, wake_failed
  std::string description;  // for people: "idle for 2h0m", "an operator (admin API)"
  // The last activity the gateway knew of when it decided (epoch: none). A backend shared with
  // other gateways may decline the sleep if someone was active since.
  std::chrono::system_clock::time_point last_activity{};
  // An operator's sleep that must not cut anyone's session (not forced): a backend shared with
  // other gateways declines it if activity was recorded after this (their sessions keep the
  // record at least this fresh).
  std::optional<std::chrono::system_clock::time_point> unless_active_after{};
};

struct Observation {
  enum class State {
    asleep,   // not running; a wake is needed
    started,  // asked to run; `upstream` may answer soon (the gateway probes it)
    failed,   // it stopped or cannot start; `reason` says why
  };
  State state = State::asleep;
  std::optional<config::Address> upstream;  // set when state is `started`
  std::string reason;
  // Since when it has been running, if the backend knows (Kubernetes: its pod's creation). A
  // spark found running counts as active from then, unless newer activity is recorded.
  std::optional<std::chrono::system_clock::time_point> running_since{};
  // Since when it has been asleep, if the backend knows (Kubernetes: the `slept-at` its last
  // sleep recorded, by whichever gateway put it to sleep). Set only when state is `asleep`.
  std::optional<std::chrono::system_clock::time_point> asleep_since{};
  // When it was last put to sleep, if the backend knows (Kubernetes: `slept-at`), in any state.
  // A running spark last slept after the newest activity a gateway knows of began a run that
  // gateway never saw start (its watch coalesced the 0, its own sleep's answer was lost).
  std::optional<std::chrono::system_clock::time_point> last_slept_at{};
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string_view kind() const = 0;

  // Starts the spark. Blocking (runs on the control-plane pool, never on the main loop);
  // returns once the start was issued, not when sshd answers. Throws BackendError.
  virtual void wake(const WakeRequest& request) = 0;

  // Stops the spark. Blocking, like wake(). Throws BackendError (the spark stays awake).
  virtual void sleep(const SleepRequest& request) = 0;

  // What the spark is doing now. Non-blocking and thread-safe: the main loop calls it freely.
  virtual Observation observe() const = 0;

  // True if the spark can be running without this gateway having started it (a unit managed
  // elsewhere): the gateway then probes it at start-up instead of assuming it is asleep.
  virtual bool may_run_without_us() const = 0;

  // Marks a spark found running at start-up as started.
  virtual void adopt_running() {}

  // True if other gateways decide about this spark too, so activity seen here must be recorded
  // where they read it (Kubernetes: the Deployment's annotations) before it matters to them.
  virtual bool shares_activity() const { return false; }

  // Records that the spark is in use as of `at`, where every gateway sleeping sparks reads it.
  // Blocking, like wake(). Returns false if the spark turned out to be asleep or going to
  // sleep (another gateway decided first): the caller wakes it instead of using it. Throws
  // BackendError when it cannot tell.
  virtual bool share_activity(std::chrono::system_clock::time_point at) {
    (void)at;
    return true;
  }

  // limits.max_running across gateways: before a wake, takes one of `max_running` places where
  // every gateway serving the spark counts them (Kubernetes: a Lease all replicas write with
  // resourceVersion preconditions, so two cannot both take the last place). Blocking, like
  // wake(). True: the place is the spark's (or the gateway's own count decides alone: the
  // default); false: every place is taken. Throws BackendError when it cannot tell.
  virtual bool claim_place(int max_running) {
    (void)max_running;
    return true;
  }
};

}  // namespace spark::gateway
