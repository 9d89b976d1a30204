#pragma once
// The Asio names the gateway uses, in one place.
#include <exception>
#include <optional>
#include <type_traits>

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>

namespace spark::gateway {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;
using boost::system::error_code;
using namespace asio::experimental::awaitable_operators;

// Runs a blocking call on the control-plane pool and resumes the awaiting coroutine on its own
// executor, so process spawning, file I/O and (later) API requests never stall the main loop.
// An exception thrown by `f` is rethrown in the caller. Deliberately not a coroutine itself:
// GCC 12 miscompiles moves of captured state inside coroutine frames. Callers: pass a named
// lambda, never a temporary, since GCC 12 may destroy temporaries in a co_await twice.
template <typename F>
auto run_blocking(asio::thread_pool& pool, const F& f) {
  using Result = std::invoke_result_t<F>;
  constexpr bool kVoid = std::is_void_v<Result>;
  using Signature = std::conditional_t<kVoid, void(std::exception_ptr),
                                       void(std::exception_ptr, std::conditional_t<kVoid, int, Result>)>;
  auto initiation = [pool_executor = pool.get_executor()](auto handler, F work) {
    // Counted as outstanding work on the caller's executor, so its io_context does not run out
    // of work (and return from run()) while the job is still in the pool.
    auto caller = asio::prefer(asio::get_associated_executor(handler), asio::execution::outstanding_work.tracked);
    asio::post(pool_executor,
               [work = std::move(work), handler = std::move(handler), caller = std::move(caller)]() mutable {
                 // The error is moved, not copied, to the caller: the pool thread keeps no reference, so
                 // the exception dies on the caller's thread after it was read there (libstdc++'s
                 // reference count is not instrumented, so TSan could not see a release from this thread
                 // ordered after the caller's read).
                 std::exception_ptr error;
                 if constexpr (kVoid) {
                   try {
                     work();
                   } catch (...) {
                     error = std::current_exception();
                   }
                   asio::post(caller, [handler = std::move(handler), error = std::move(error)]() mutable {
                     std::move(handler)(error);
                   });
                 } else {
                   std::optional<Result> result;
                   try {
                     result.emplace(work());
                   } catch (...) {
                     error = std::current_exception();
                   }
                   asio::post(caller, [handler = std::move(handler), error = std::move(error),
                                       result = std::move(result)]() mutable {
                     std::move(handler)(error, result ? std::move(*result) : Result{});
                   });
                 }
               });
  };
  return asio::async_initiate<decltype(use_awaitable), Signature>(std::move(initiation), use_awaitable, f);
}

}  // namespace spark::gateway
