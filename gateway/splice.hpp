#pragma once
// Moves bytes both ways between two connected sockets until both directions have ended.
#include <prometheus/counter.h>

#include <cstdint>

#include "gateway/asio.hpp"

namespace spark::gateway {

// Bytes moved, per connection (for its log line) and per spark (a lock-free metric increment
// per read, no allocation).
struct SpliceCounters {
  std::uint64_t& client_to_upstream;
  std::uint64_t& upstream_to_client;
  prometheus::Counter& spark_client_to_upstream;
  prometheus::Counter& spark_upstream_to_client;
};

// Half-close is propagated: when one side finishes sending, the other side's write half is shut
// down and the opposite direction keeps running. An error in either direction (a reset) ends
// both; the caller then closes the sockets. Throws boost::system::system_error on such errors.
awaitable<void> splice(tcp::socket& client, tcp::socket& upstream, SpliceCounters counters);

}  // namespace spark::gateway
