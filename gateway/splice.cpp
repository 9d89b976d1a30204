#include "gateway/splice.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <vector>

#include <boost/asio/experimental/parallel_group.hpp>

#include "gateway/tcp_keepalive.hpp"

namespace spark::gateway {
namespace {

// Read/write path: one buffer per thread, shared by every connection. Bytes stay in it only
// between a read and the write right after; what the peer cannot take yet is copied out.
constexpr std::size_t kChunk = 16 * 1024;
thread_local std::array<char, kChunk> shared_buffer;

// A splice that moves less than this is not bulk any more: back to read/write.
constexpr std::size_t kSmallSplice = 4096;

[[noreturn]] void throw_errno(SpliceSide side) {
  throw SpliceError(error_code(errno, boost::system::system_category()), side);
}

bool peer_unreachable(const std::exception_ptr& error) {
  if (!error) return false;
  try {
    std::rethrow_exception(error);
  } catch (const SpliceError& e) {
    return is_peer_unreachable(e.code());
  } catch (...) {
    return false;
  }
}

bool would_block() { return errno == EAGAIN || errno == EWOULDBLOCK; }

// A pipe borrowed from the pool for one direction. Given back only when empty; a pipe that may
// still hold bytes (an error mid-flow) is closed instead.
class PipeLease {
 public:
  explicit PipeLease(PipePool& pool) : pool_(pool) {}
  ~PipeLease() { give_back(); }
  PipeLease(const PipeLease&) = delete;
  PipeLease& operator=(const PipeLease&) = delete;

  bool held() const { return pipe_.has_value(); }
  bool take() {
    pipe_ = pool_.acquire();
    return held();
  }
  void give_back() {
    if (!pipe_) return;
    if (parked == 0) {
      pool_.release(std::move(*pipe_));
    } else {
      pool_.forget();
    }
    pipe_.reset();
    parked = 0;
  }
  int read_fd() const { return pipe_->read_fd(); }
  int write_fd() const { return pipe_->write_fd(); }
  std::size_t capacity() const { return pool_.pipe_bytes(); }

  std::size_t parked = 0;  // bytes in the pipe not yet written out

 private:
  PipePool& pool_;
  std::optional<Pipe> pipe_;
};

// One direction. Every syscall is tried first; we wait for readiness only on EAGAIN. An error
// names the socket it happened on (`from_side`, or the other one).
awaitable<void> pump(tcp::socket& from, tcp::socket& to, SpliceSide from_side, std::uint64_t& counter,
                     prometheus::Counter& total, PipePool& pipes) {
  const SpliceSide to_side = from_side == SpliceSide::client ? SpliceSide::upstream : SpliceSide::client;
  const int in = from.native_handle();
  const int out = to.native_handle();
  PipeLease pipe(pipes);
  std::vector<char> pending;  // read/write path: bytes `to` could not take yet
  bool bulk = false;

  for (;;) {
    // 1. Deliver what is already in hand.
    if (pipe.parked > 0) {
      const ssize_t n = ::splice(pipe.read_fd(), nullptr, out, nullptr, pipe.parked,
                                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        pipe.parked -= static_cast<std::size_t>(n);
        counter += static_cast<std::uint64_t>(n);
        total.Increment(static_cast<double>(n));
      } else if (n < 0 && would_block()) {
        co_await to.async_wait(tcp::socket::wait_write, use_awaitable);
      } else if (n < 0 && errno != EINTR) {
        throw_errno(to_side);
      }
      continue;
    }
    if (!pending.empty()) {
      const ssize_t n = ::send(out, pending.data(), pending.size(), MSG_NOSIGNAL);
      if (n > 0) {
        pending.erase(pending.begin(), pending.begin() + n);
        counter += static_cast<std::uint64_t>(n);
        total.Increment(static_cast<double>(n));
        if (pending.empty()) pending.shrink_to_fit();  // back to no buffer of our own
      } else if (n < 0 && would_block()) {
        co_await to.async_wait(tcp::socket::wait_write, use_awaitable);
      } else if (n < 0 && errno != EINTR) {
        throw_errno(to_side);
      }
      continue;
    }

    // 2. Choose the path for the next bytes.
    if (bulk && !pipe.held() && !pipe.take()) bulk = false;  // no pipe free: read/write it is
    if (!bulk && pipe.held()) pipe.give_back();

    // 3. Take more from `from`.
    if (pipe.held()) {
      const ssize_t n = ::splice(in, nullptr, pipe.write_fd(), nullptr, pipe.capacity(),
                                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        pipe.parked = static_cast<std::size_t>(n);
        if (static_cast<std::size_t>(n) < kSmallSplice) bulk = false;
        continue;
      }
      if (n == 0) break;  // end of stream
      if (would_block()) {
        co_await from.async_wait(tcp::socket::wait_read, use_awaitable);
        continue;
      }
      if (errno == EINTR) continue;
      if (errno == EINVAL) {  // this pair of fds cannot be spliced: stay on read/write
        bulk = false;
        continue;
      }
      throw_errno(from_side);
    }
    char* buf = shared_buffer.data();
    const ssize_t n = ::recv(in, buf, kChunk, 0);
    if (n == 0) break;
    if (n < 0) {
      if (would_block()) {
        co_await from.async_wait(tcp::socket::wait_read, use_awaitable);
        continue;
      }
      if (errno == EINTR) continue;
      throw_errno(from_side);
    }
    if (static_cast<std::size_t>(n) == kChunk) bulk = true;
    ssize_t sent = ::send(out, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL);
    if (sent < 0) {
      if (!would_block() && errno != EINTR) throw_errno(to_side);
      sent = 0;
    }
    counter += static_cast<std::uint64_t>(sent);
    total.Increment(static_cast<double>(sent));
    if (sent < n) pending.assign(buf + sent, buf + n);  // keep only what `to` could not take
  }

  // `from` finished sending: pass the half-close on; the other direction keeps going.
  pipe.give_back();
  ::shutdown(out, SHUT_WR);
}

}  // namespace

awaitable<void> splice(tcp::socket& client, tcp::socket& upstream, SpliceCounters counters,
                       PipePool& pipes) {
  client.native_non_blocking(true);
  upstream.native_non_blocking(true);
  // Both directions run together; the first error cancels the other one. Asio's `&&` would then
  // report the *first operand's* exception (often just "operation canceled"), so we keep the
  // completion order and rethrow the error that actually ended the splice.
  const auto executor = co_await asio::this_coro::executor;
  auto both = asio::experimental::make_parallel_group(
      asio::co_spawn(executor,
                     pump(client, upstream, SpliceSide::client, counters.client_to_upstream,
                          counters.spark_client_to_upstream, pipes),
                     asio::deferred),
      asio::co_spawn(executor,
                     pump(upstream, client, SpliceSide::upstream, counters.upstream_to_client,
                          counters.spark_upstream_to_client, pipes),
                     asio::deferred));
  auto [order, up_error, down_error] =
      co_await both.async_wait(asio::experimental::wait_for_one_error(), use_awaitable);
  error_code ignored;
  client.close(ignored);
  upstream.close(ignored);
  const std::exception_ptr first = order[0] == 0 ? up_error : down_error;
  const std::exception_ptr second = order[0] == 0 ? down_error : up_error;
  // A dead peer's ETIMEDOUT is reported once, to whichever call touched its socket first; the
  // other direction may have failed on the same socket meanwhile with a plainer error (EPIPE).
  // The reason the connection ended is the dead peer.
  if (!peer_unreachable(first) && peer_unreachable(second)) std::rethrow_exception(second);
  if (first) std::rethrow_exception(first);
  if (second) std::rethrow_exception(second);
}

}  // namespace spark::gateway
