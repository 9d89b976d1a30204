#pragma once
// Moves bytes both ways between two connected sockets until both directions have ended.
#include <prometheus/counter.h>

#include <cstdint>
#include <exception>

#include "gateway/asio.hpp"
#include "gateway/pipe_pool.hpp"

namespace spark::gateway {

// The spark's byte counters, incremented as bytes move (a lock-free metric increment per write,
// no allocation), so a long session shows in rate() while it lasts.
struct SpliceMetrics {
  prometheus::Counter& client_to_upstream;
  prometheus::Counter& upstream_to_client;
};

// What a splice moved, and how it ended.
struct SpliceResult {
  std::uint64_t client_to_upstream = 0;
  std::uint64_t upstream_to_client = 0;
  // Empty when both directions ended cleanly; else a SpliceError for an error on a socket
  // (preferring one that says a peer is unreachable, tcp_keepalive.hpp), or another
  // boost::system::system_error.
  std::exception_ptr error;
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
// (a data worker: data_plane.hpp). Returns what moved and the error that ended it, if any.
awaitable<SpliceResult> splice(tcp::socket& client, tcp::socket& upstream, SpliceMetrics spark_bytes,
                               PipePool& pipes);

}  // namespace spark::gateway
