#pragma once
// Moves bytes both ways between two connected sockets until both directions have ended.
#include <prometheus/counter.h>

#include <cstdint>

#include "gateway/asio.hpp"
#include "gateway/pipe_pool.hpp"

namespace spark::gateway {

// Bytes moved, per connection (for its log line) and per spark (a lock-free metric increment
// per write, no allocation).
struct SpliceCounters {
  std::uint64_t& client_to_upstream;
  std::uint64_t& upstream_to_client;
  prometheus::Counter& spark_client_to_upstream;
  prometheus::Counter& spark_upstream_to_client;
};

// Each direction starts on plain read/write through one shared buffer (interactive traffic:
// no per-connection buffer while idle, none at all while the peer keeps up). A read that fills
// the buffer marks the flow as bulk, and it switches to splice(2) through a pipe from `pipes`
// (zero-copy), going back when splices turn small or no pipe is free.
//
// Half-close is propagated: when one side finishes sending, the other side's write half is shut
// down and the opposite direction keeps running. An error in either direction (a reset) ends
// both. Either way both sockets are closed on the way out, on the executor splice() runs on
// (a data worker: data_plane.hpp). Throws boost::system::system_error on such errors.
awaitable<void> splice(tcp::socket& client, tcp::socket& upstream, SpliceCounters counters,
                       PipePool& pipes);

}  // namespace spark::gateway
