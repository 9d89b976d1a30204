#pragma once
// Moves bytes both ways between two connected sockets until both directions have ended.
#include <prometheus/counter.h>

#include <cstdint>

#include "gateway/asio.hpp"
#include "gateway/pipe_pool.hpp"

namespace spark::gateway {

// Bytes moved, per connection (for its log line; written once, when splice() ends, whichever
// way it ends) and per spark (a lock-free metric increment per write, no allocation).
struct SpliceCounters {
  std::uint64_t& client_to_upstream;
  std::uint64_t& upstream_to_client;
  prometheus::Counter& spark_client_to_upstream;
  prometheus::Counter& spark_upstream_to_client;
};

// Which socket of a splice failed.
enum class SpliceSide { client, upstream };

// A socket error that ended a splice, with the side it happened on: a vanished client and a
// vanished spark are different stories in the log and the metrics.
class SpliceError : public boost::system::system_error {
 public:
  SpliceError(error_code ec, SpliceSide side) : system_error(ec), side_(side) {}
  SpliceSide side() const { return side_; }

 private:
  SpliceSide side_;
};

// Each direction starts on plain read/write through one shared buffer (interactive traffic:
// no per-connection buffer while idle, none at all while the peer keeps up). A read that fills
// the buffer marks the flow as bulk, and it switches to splice(2) through a pipe from `pipes`
// (zero-copy), going back when splices turn small or no pipe is free.
//
// Half-close is propagated: when one side finishes sending, the other side's write half is shut
// down and the opposite direction keeps running. An error in either direction (a reset) ends
// both. Either way both sockets are closed on the way out, on the executor splice() runs on
// (a data worker: data_plane.hpp). Throws SpliceError for an error on a socket (preferring one
// that says a peer is unreachable, tcp_keepalive.hpp), boost::system::system_error otherwise.
awaitable<void> splice(tcp::socket& client, tcp::socket& upstream, SpliceCounters counters,
                       PipePool& pipes);

}  // namespace spark::gateway
