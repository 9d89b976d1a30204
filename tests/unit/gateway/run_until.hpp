#pragma once
// Runs a test's event loop until a condition holds or a deadline passes: the one way the
// gateway's unit tests wait (never a bare sleep that hides a race).
#include <algorithm>
#include <chrono>
#include <functional>

#include "gateway/asio.hpp"

namespace spark::gateway::test {

// Returns done(). Runs in short slices: some conditions change on other threads (the control
// pool, a data worker, the kernel), which run no handler on `io`.
inline bool run_until(asio::io_context& io, const std::function<bool()>& done,
                      std::chrono::steady_clock::duration limit) {
  using std::chrono::steady_clock;
  const auto deadline = steady_clock::now() + limit;
  while (!done()) {
    const auto now = steady_clock::now();
    if (now >= deadline) break;
    io.run_one_for(std::min<steady_clock::duration>(deadline - now, std::chrono::milliseconds(10)));
  }
  return done();
}

}  // namespace spark::gateway::test
