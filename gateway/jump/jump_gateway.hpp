#pragma once
// The seam between the jump host's libssh threads and the gateway's main loop: the jump host asks
// for a spark's upstream connection (the same single-flight wake as the TCP path) and reports its
// sessions; the gateway answers through an UpstreamHandoff. Every call is safe from any thread.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "gateway/backend/unique_fd.hpp"
#include "gateway/observability/metrics.hpp"

namespace spark::gateway {

// One upstream connection on its way from the main loop to a jump session: first the
// admission's answer (the same caps as a TCP connection), then the socket or the reason.
class UpstreamHandoff {
 public:
  // Main loop: the connection passed admission; it counts as open and waits for its spark.
  void admit();
  // Main loop: the admission refused it (`why`: which cap); nothing was opened or counted.
  void refuse(std::string why);
  // Main loop: a connected socket (fd >= 0, now owned here) or why there is none. Returns false
  // when the session already gave up: the caller then closes `fd` and ends the connection.
  bool deliver(int fd, std::string error);
  // Jump session: waits up to `timeout` for the admission's answer (admitted, refused, or
  // already delivered); true once it came.
  bool wait_for_admission(std::chrono::milliseconds timeout);
  // Jump session: waits up to `timeout`; true once delivered (or refused).
  bool wait_for(std::chrono::milliseconds timeout);
  // After delivery: the socket (the caller owns it from now on), or -1 with error() set.
  int take_fd();
  std::string error() const;
  // Whether the admission refused it; error() says why.
  bool refused() const;
  // The session is gone: whatever arrives later is closed by deliver()'s caller. Returns true
  // if a socket had already arrived (closed here; the caller reports upstream_ended()).
  bool abandon();
  // While the spark's wake waits in line (limits.max_running), where it stands, for the
  // session's progress lines ("2 sparks are running (the limit is 2); brave-dolphin is 1st in
  // line"); empty when not in line. Main loop sets it, the session reads it.
  void set_place(std::string place);
  std::string place() const;
  // Delivered, refused or abandoned: nothing more to tell the session.
  bool answered() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable changed_;
  bool admitted_ = false;
  bool refused_ = false;
  bool done_ = false;
  bool abandoned_ = false;
  UniqueFd fd_;  // delivered, not yet taken
  std::string error_;
  std::string place_;
};

class JumpGateway {
 public:
  virtual ~JumpGateway() = default;

  struct SparkInfo {
    int target_port = 22;    // the spark's sshd port (a channel may ask for it or for 22)
    bool running = false;    // awake and answering now
    std::string asleep_for;  // "3h12m" when asleep, for the progress line
    // The spark's own keepalive for its upstream socket; nullopt: the jump host's (defaults).
    std::optional<config::TcpKeepalive> keepalive;
  };
  virtual std::optional<SparkInfo> find_spark(const std::string& name) = 0;
  // The same without waiting, for the jump host's one thread of logins, which must never wait
  // on the main loop: `done` runs later on a thread of the gateway's choosing (the caller
  // posts the answer home).
  virtual void find_spark_async(const std::string& name, std::function<void(std::optional<SparkInfo>)> done) {
    done(find_spark(name));
  }

  // Opens a connection to the spark as the TCP path does: the same admission (caps, a refusal
  // counted and logged the same way), then it counts as an open connection, waking the spark if
  // needed. `peer` says who the client is, for the wake's cause and the spark's last client:
  // "10.0.0.7 (jump login brave-dolphin.alice, key SHA256:...)". The answers arrive in `handoff`.
  virtual void connect_upstream(const std::string& name, const std::string& peer,
                                std::shared_ptr<UpstreamHandoff> handoff) = 0;
  // A session whose upstream was delivered (through `handoff`) has ended: the connection
  // closes, its bytes are counted, and how it ended (a peer found dead by keepalive has its own
  // outcome in spark_gateway_connections_ended_total).
  virtual void upstream_ended(std::shared_ptr<UpstreamHandoff> handoff, std::uint64_t client_to_spark,
                              std::uint64_t spark_to_client, ConnectionEnd end) = 0;
};

}  // namespace spark::gateway
