#pragma once
// Who may start logging in to the jump host: OpenSSH's MaxStartups and PerSourcePenalties, plus
// a fair share among sources (docs/jump-host.md, "Unauthenticated connections").
//
//   * MaxStartups start:rate:full: from `start` unauthenticated connections on, a new one must go
//     with probability rate% rising linearly to 100% at `full`.
//   * Which one goes: OpenSSH refuses the newcomer, so 100 idle connections from one source keep
//     everyone out until login_grace ends them. Here, when the newcomer's source holds fewer than
//     the source holding the most, that source's oldest unauthenticated connection goes instead:
//     a flood from one source only ever displaces itself.
//   * PerSourcePenalties: a connection that ends without logging in adds penalty time to its
//     source (authfail, noauth, grace_exceeded); once a source holds more than `min`, its new
//     connections are refused until the time runs out (never more than `max` ahead).
//   * max_sessions: every jump connection, logging in or logged in; at the cap the same fair
//     share applies.
//
// Pure bookkeeping: no sockets, no threads, no clock of its own (the jump host's accept loop
// asks about every connection and says how each unauthenticated one ended), so it is unit-tested.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "config/config.hpp"

namespace spark::gateway {

class StartupGate {
 public:
  using Clock = std::chrono::steady_clock;
  using Source = std::string;  // the client's address, "10.0.0.7"
  // A number in [0, 1); the drops' coin.
  using Random = std::function<double()>;

  // Sources whose penalty is remembered at once; beyond, new ones go unrecorded (OpenSSH's
  // "permissive" overflow): a flood of addresses cannot grow the table without bound.
  static constexpr std::size_t kMaxPenalizedSources = 65536;

  StartupGate(config::MaxStartups startups, config::SourcePenalties penalties, int max_sessions,
              Random random = {});

  struct Decision {
    enum class Kind { admit, admit_after_eviction, refuse };
    Kind kind = Kind::admit;
    std::string why;      // refuse: for the log ("max_startups 10:30:100: 57 unauthenticated ...")
    Source evict;         // admit_after_eviction: whose oldest unauthenticated connection goes
    bool penalized = false;  // refuse: because of the source's penalty
  };
  // A new connection from `from`; `logged_in` jump sessions are open. On admit, call started();
  // on admit_after_eviction, end the victim (ended(..., evicted)) and call started().
  Decision decide(const Source& from, int logged_in, Clock::time_point now);

  enum class End {
    logged_in,       // authenticated: no penalty
    authfail,        // tried and failed (unknown spark, key not authorized, bad signature)
    noauth,          // ended without trying
    grace_exceeded,  // outlived login_grace
    evicted,         // made room for another source's connection (it had not logged in)
    dropped,         // closed by the gateway itself (shutdown, out of descriptors): no penalty
  };
  void started(const Source& from);
  // Returns true when this end made the source's penalty active (for a log line, once).
  bool ended(const Source& from, End how, Clock::time_point now);

  int unauthenticated() const { return unauthenticated_; }
  int unauthenticated_from(const Source& from) const;
  // The probability that a new connection must go, with `unauthenticated` already there.
  double drop_probability(int unauthenticated) const;
  // How long `from` is still refused (nullopt: it is not).
  std::optional<Clock::duration> penalty_left(const Source& from, Clock::time_point now) const;
  std::size_t penalized_sources() const { return penalties_.size(); }

 private:
  struct Penalty {
    Clock::time_point until;
    bool active = false;
  };
  // The source holding the most unauthenticated connections, if it holds at least two more than
  // `from` would after this one (else taking from it would only swap the imbalance).
  std::optional<Source> heavier_than(const Source& from) const;
  Decision refuse_or_evict(const Source& from, std::string why) const;
  void forget_expired(Clock::time_point now);

  config::MaxStartups startups_;
  config::SourcePenalties penalty_cfg_;
  int max_sessions_;
  Random random_;
  int unauthenticated_ = 0;
  std::uint64_t ends_ = 0;
  std::map<Source, int> per_source_;  // unauthenticated connections, only sources with some
  std::map<Source, Penalty> penalties_;
};

std::string_view to_string(StartupGate::End end);

}  // namespace spark::gateway
