#pragma once
// A one-shot event coroutines can wait on: set() wakes every waiter, later waits return at once.
#include "gateway/asio.hpp"

namespace spark::gateway {

class AsyncEvent {
 public:
  explicit AsyncEvent(asio::any_io_executor ex) : timer_(ex, asio::steady_timer::time_point::max()) {}

  bool is_set() const { return set_; }

  void set() {
    set_ = true;
    timer_.cancel();
  }

  awaitable<void> wait() {
    if (set_) co_return;
    error_code ec;  // operation_aborted is the wake-up, not an error
    co_await timer_.async_wait(asio::redirect_error(use_awaitable, ec));
  }

 private:
  asio::steady_timer timer_;
  bool set_ = false;
};

}  // namespace spark::gateway
