#pragma once
// The Asio names the data plane uses, in one place.
#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>

namespace spark::gateway {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;
using boost::system::error_code;
using namespace asio::experimental::awaitable_operators;

// Runs a blocking call on the control-plane pool and resumes the caller on its own executor,
// so process spawning, file I/O and (later) API requests never stall the data plane.
template <typename F>
awaitable<std::invoke_result_t<F>> run_blocking(asio::thread_pool& pool, F f) {
  using Result = std::invoke_result_t<F>;
  co_return co_await asio::co_spawn(
      pool, [f = std::move(f)]() mutable -> awaitable<Result> { co_return f(); }, use_awaitable);
}

}  // namespace spark::gateway
