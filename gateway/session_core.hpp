#pragma once
// The session core: what every way into a spark shares, a TCP connection through the spark's
// listener and a jump session alike (DESIGN.md: "one admission path for every way in").
//
//   refuse()   the caps (ConnectionAdmission); a refusal is counted and logged
//   track()    from then on the session counts against the caps and is in the registry the
//              drain waits for and a forced sleep ends
//   open()     tracked, and activity on its spark (a TCP connection only once its client has
//              shown it is a person's: client_greeting.hpp)
//   reach()    the spark's upstream through its single-flight wake; a failure counted by outcome
//   spliced()  the bytes flow
//   close()    how it ended counted, the spark's connection closed, out of the registry
//
// Main loop only.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "config/config.hpp"
#include "gateway/admission.hpp"
#include "gateway/asio.hpp"
#include "gateway/outcomes.hpp"
#include "gateway/spark.hpp"

namespace spark::gateway {

// A session the main loop can end: a TCP connection, or a jump session.
class LiveSession {
 public:
  explicit LiveSession(std::shared_ptr<Spark> spark) : spark_(std::move(spark)) {}
  virtual ~LiveSession() = default;
  // The spark it was opened to, even if a reload has removed it since.
  Spark& spark() const { return *spark_; }
  // Drain timeout, forced sleep: end it now (main loop). A session still waiting for its wake
  // ends when the wait does.
  virtual void force_close() = 0;

 protected:
  std::shared_ptr<Spark> spark_;

 private:
  friend class SessionCore;
  bool counted_open_ = false;                          // activity on its spark (open() was called)
  std::chrono::steady_clock::time_point opened_at_{};  // when open() was called
};

// What reaching a spark gave: the socket, or why there is none.
struct Reached {
  std::optional<tcp::socket> socket;
  // wake_failed or upstream_failed (counted); empty for other errors (a socket error).
  std::optional<ConnectionOutcome> failure;
  std::string error;  // the reason, for the log and the client
};

class SessionCore {
 public:
  // `cfg` is read at each decision (a reload changes the caps for new sessions only);
  // `waiting_for_wakes` counts every spark's connections waiting for a wake.
  SessionCore(const config::Config& cfg, std::function<int()> waiting_for_wakes);

  // Why a new session to `spark` from `from` (the client's address) may not open, counted and
  // logged; nullopt when it may. Decide and open() in one turn of the main loop: no other
  // session can slip in between.
  std::optional<std::string> refuse(Spark& spark, const std::string& from);
  // Whether `peer` may say who its client is (a PROXY header): it is in trusted_proxies.
  bool trusted_proxy(const asio::ip::address& peer) const;
  // Once draining, every new session is refused.
  void stop_admitting() { stopping_ = true; }

  void track(LiveSession& session);
  void open(LiveSession& session);
  // The upstream, waking the spark if needed (`cause`: who asked, for the wake's record; the
  // socket opened on `socket_executor` when connected warm): its sshd, or its dev port `port`
  // (a port_closed failure is the caller's to count, on the port's metrics; `client_gone` ends
  // the wait for a dev port whose client left).
  static awaitable<Reached> reach(Spark& spark, std::string cause, asio::any_io_executor socket_executor = {},
                                  std::optional<int> port = {}, std::function<bool()> client_gone = {});
  static void spliced(LiveSession& session);
  // `end`: how a spliced session ended (nothing for one that never spliced).
  void close(LiveSession& session, std::optional<ConnectionEnd> end);

  std::size_t open_sessions() const { return live_.size(); }
  std::uint64_t closed() const { return closed_; }  // ever, for the memory trim
  void close_all();
  // A forced sleep: the spark's sessions end with it, whatever its backend does to them.
  void close_spark(const Spark& spark);

 private:
  const config::Config& cfg_;
  ConnectionAdmission admission_;
  std::set<LiveSession*> live_;
  std::uint64_t closed_ = 0;
  bool stopping_ = false;
};

}  // namespace spark::gateway
