#pragma once
// A periodic task on the current executor: waits `interval()` (read each time: a reload may
// change it), runs `tick`, and goes on while `tick` returns true.
#include <chrono>
#include <functional>

#include "gateway/asio.hpp"

namespace spark::gateway {

inline awaitable<void> every(std::function<std::chrono::milliseconds()> interval, std::function<bool()> tick) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  do {
    timer.expires_after(interval());
    co_await timer.async_wait(use_awaitable);
  } while (tick());
}

}  // namespace spark::gateway
