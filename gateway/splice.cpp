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

// One direction of a splice: bytes from `from` to `to`, until `from` ends its stream. Each
// call to step() makes one syscall and says what comes next; run() does the waiting, so the
// steps themselves are plain functions (no coroutine frame per step on the data path). Every
// syscall is tried first; we wait for readiness only on EAGAIN. An error names the socket it
// happened on (`from_side`, or the other one).
class Direction {
 public:
  Direction(tcp::socket& from, tcp::socket& to, SpliceSide from_side, prometheus::Counter& total,
            PipePool& pipes)
      : from_(from),
        to_(to),
        in_(from.native_handle()),
        out_(to.native_handle()),
        from_side_(from_side),
        to_side_(from_side == SpliceSide::client ? SpliceSide::upstream : SpliceSide::client),
        total_(total),
        pipe_(pipes) {}
  Direction(const Direction&) = delete;
  Direction& operator=(const Direction&) = delete;

  // Moves bytes until `from` finishes sending, then passes the half-close on. Throws
  // SpliceError for an error on either socket. `this` must outlive the coroutine.
  awaitable<void> run() {
    for (;;) {
      const Next next = step();
      if (next == Next::ended) break;
      if (next == Next::wait_readable) {
        co_await wait_readable();
      } else if (next == Next::wait_writable) {
        co_await wait_writable();
      }
    }
    half_close();
  }

  // Bytes delivered to `to` so far (also when run() ended with an error).
  std::uint64_t moved() const { return moved_; }

 private:
  enum class Next { again, wait_readable, wait_writable, ended };

  // Plain functions returning Asio's awaitable: no frame of their own.
  awaitable<void> wait_readable() { return from_.async_wait(tcp::socket::wait_read, use_awaitable); }
  awaitable<void> wait_writable() { return to_.async_wait(tcp::socket::wait_write, use_awaitable); }

  Next step() {
    // 1. Deliver what is already in hand.
    if (pipe_.parked > 0) return deliver_from_pipe();
    if (!pending_.empty()) return deliver_pending();
    // 2. Choose the path for the next bytes. 3. Take more from `from`.
    choose_path();
    return pipe_.held() ? take_into_pipe() : copy_through_buffer();
  }

  // Bulk path, second half: what splice(2) parked in the pipe goes out to `to`.
  Next deliver_from_pipe() {
    const ssize_t n = ::splice(pipe_.read_fd(), nullptr, out_, nullptr, pipe_.parked,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      pipe_.parked -= static_cast<std::size_t>(n);
      count(n);
    } else if (n < 0 && would_block()) {
      return Next::wait_writable;
    } else if (n < 0 && errno != EINTR) {
      fail(to_side_);
    }
    return Next::again;
  }

  // Read/write path: bytes `to` could not take at once, held in a buffer of our own.
  Next deliver_pending() {
    const ssize_t n = ::send(out_, pending_.data(), pending_.size(), MSG_NOSIGNAL);
    if (n > 0) {
      pending_.erase(pending_.begin(), pending_.begin() + n);
      count(n);
      if (pending_.empty()) pending_.shrink_to_fit();  // back to no buffer of our own
    } else if (n < 0 && would_block()) {
      return Next::wait_writable;
    } else if (n < 0 && errno != EINTR) {
      fail(to_side_);
    }
    return Next::again;
  }

  void choose_path() {
    if (bulk_ && !pipe_.held() && !pipe_.take()) bulk_ = false;  // no pipe free: read/write it is
    if (!bulk_ && pipe_.held()) pipe_.give_back();
  }

  // Bulk path, first half: splice(2) from `from` into the pipe, zero-copy.
  Next take_into_pipe() {
    const ssize_t n = ::splice(in_, nullptr, pipe_.write_fd(), nullptr, pipe_.capacity(),
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      pipe_.parked = static_cast<std::size_t>(n);
      if (static_cast<std::size_t>(n) < kSmallSplice) bulk_ = false;
      return Next::again;
    }
    if (n == 0) return Next::ended;
    if (would_block()) return Next::wait_readable;
    if (errno == EINTR) return Next::again;
    if (errno == EINVAL) {  // this pair of fds cannot be spliced: stay on read/write
      bulk_ = false;
      return Next::again;
    }
    fail(from_side_);
  }

  // Read/write path: recv into the shared buffer, send straight on; a full read means bulk.
  Next copy_through_buffer() {
    char* buf = shared_buffer.data();
    const ssize_t n = ::recv(in_, buf, kChunk, 0);
    if (n == 0) return Next::ended;
    if (n < 0) {
      if (would_block()) return Next::wait_readable;
      if (errno == EINTR) return Next::again;
      fail(from_side_);
    }
    if (static_cast<std::size_t>(n) == kChunk) bulk_ = true;
    ssize_t sent = ::send(out_, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL);
    if (sent < 0) {
      if (!would_block() && errno != EINTR) fail(to_side_);
      sent = 0;
    }
    count(sent);
    if (sent < n) pending_.assign(buf + sent, buf + n);  // keep only what `to` could not take
    return Next::again;
  }

  // `from` finished sending: pass the half-close on; the other direction keeps going.
  void half_close() {
    pipe_.give_back();
    ::shutdown(out_, SHUT_WR);
  }

  void count(ssize_t n) {
    moved_ += static_cast<std::uint64_t>(n);
    total_.Increment(static_cast<double>(n));
  }

  // The error in errno, on the socket it happened on.
  [[noreturn]] static void fail(SpliceSide side) {
    throw SpliceError(error_code(errno, boost::system::system_category()), side);
  }

  tcp::socket& from_;
  tcp::socket& to_;
  const int in_;
  const int out_;
  const SpliceSide from_side_;
  const SpliceSide to_side_;
  prometheus::Counter& total_;  // the spark's, live
  std::uint64_t moved_ = 0;     // this connection's, read when the splice has ended
  PipeLease pipe_;
  std::vector<char> pending_;  // read/write path: bytes `to` could not take yet
  bool bulk_ = false;
};

}  // namespace

awaitable<SpliceResult> splice(tcp::socket& client, tcp::socket& upstream, SpliceMetrics spark_bytes,
                               PipePool& pipes) {
  client.native_non_blocking(true);
  upstream.native_non_blocking(true);
  // Both directions run together; the first error cancels the other one. Asio's `&&` would then
  // report the *first operand's* exception (often just "operation canceled"), so we keep the
  // completion order and rethrow the error that actually ended the splice.
  const auto executor = co_await asio::this_coro::executor;
  Direction up(client, upstream, SpliceSide::client, spark_bytes.client_to_upstream, pipes);
  Direction down(upstream, client, SpliceSide::upstream, spark_bytes.upstream_to_client, pipes);
  auto both = asio::experimental::make_parallel_group(
      asio::co_spawn(executor, up.run(), asio::deferred),
      asio::co_spawn(executor, down.run(), asio::deferred));
  auto [order, up_error, down_error] =
      co_await both.async_wait(asio::experimental::wait_for_one_error(), use_awaitable);
  error_code ignored;
  client.close(ignored);
  upstream.close(ignored);
  const std::exception_ptr first = order[0] == 0 ? up_error : down_error;
  const std::exception_ptr second = order[0] == 0 ? down_error : up_error;
  SpliceResult result{up.moved(), down.moved(), first ? first : second};
  // A dead peer's ETIMEDOUT is reported once, to whichever call touched its socket first; the
  // other direction may have failed on the same socket meanwhile with a plainer error (EPIPE).
  // The reason the connection ended is the dead peer.
  if (!peer_unreachable(first) && peer_unreachable(second)) result.error = second;
  co_return result;
}

}  // namespace spark::gateway
