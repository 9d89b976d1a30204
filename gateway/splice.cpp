#include "gateway/splice.hpp"

#include <array>

namespace spark::gateway {
namespace {

constexpr std::size_t kBufferSize = 16 * 1024;

awaitable<void> pump(tcp::socket& from, tcp::socket& to, std::uint64_t& counter,
                     prometheus::Counter& total) {
  std::array<char, kBufferSize> buffer;
  for (;;) {
    error_code ec;
    const std::size_t n =
        co_await from.async_read_some(asio::buffer(buffer), asio::redirect_error(use_awaitable, ec));
    if (ec == asio::error::eof) {
      error_code ignored;
      to.shutdown(tcp::socket::shutdown_send, ignored);  // pass the half-close on
      co_return;
    }
    if (ec) throw boost::system::system_error(ec);
    co_await asio::async_write(to, asio::buffer(buffer.data(), n), use_awaitable);
    counter += n;
    total.Increment(static_cast<double>(n));
  }
}

}  // namespace

awaitable<void> splice(tcp::socket& client, tcp::socket& upstream, SpliceCounters counters) {
  co_await (pump(client, upstream, counters.client_to_upstream, counters.spark_client_to_upstream) &&
            pump(upstream, client, counters.upstream_to_client, counters.spark_upstream_to_client));
}

}  // namespace spark::gateway
