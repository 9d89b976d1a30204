#pragma once
// The one seam between the data plane and whatever runs a spark. The data plane asks a backend
// to wake or sleep a spark and observes it; it never knows whether a local child, a user's
// command or a Kubernetes Deployment is behind it.
#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "config/address.hpp"

namespace spark::gateway {

// A failed wake or sleep; what() is the reason shown to operators.
class BackendError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Why a spark is woken; backends that keep a record (Kubernetes Events) tell the story with it.
struct WakeRequest {
  std::chrono::milliseconds timeout{};
  std::string cause;  // "a connection from 100.101.102.103", "an operator (admin API)"
};

// Why a spark is put to sleep, and what the decision was based on.
struct SleepRequest {
  std::string reason;  // idle, api, shutdown, removed
  std::string description;  // for people: "idle for 2h0m", "an operator (admin API)"
  // The last activity the gateway knew of when it decided (epoch: none). A backend shared with
  // other gateways may decline the sleep if someone was active since.
  std::chrono::system_clock::time_point last_activity{};
};

struct Observation {
  enum class State {
    asleep,   // not running; a wake is needed
    started,  // asked to run; `upstream` may answer soon (the data plane probes it)
    failed,   // it stopped or cannot start; `reason` says why
  };
  State state = State::asleep;
  std::optional<config::Address> upstream;  // set when state is `started`
  std::string reason;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string_view kind() const = 0;

  // Starts the spark. Blocking (runs on the control-plane pool, never on the data plane);
  // returns once the start was issued, not when sshd answers. Throws BackendError.
  virtual void wake(const WakeRequest& request) = 0;

  // Stops the spark. Blocking, like wake(). Throws BackendError (the spark stays awake).
  virtual void sleep(const SleepRequest& request) = 0;

  // What the spark is doing now. Non-blocking and thread-safe: the data plane calls it freely.
  virtual Observation observe() const = 0;

  // True if the spark can be running without this gateway having started it (a unit managed
  // elsewhere): the gateway then probes it at start-up instead of assuming it is asleep.
  virtual bool may_run_without_us() const = 0;

  // Marks a spark found running at start-up as started.
  virtual void adopt_running() {}
};

}  // namespace spark::gateway
