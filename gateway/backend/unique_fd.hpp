#pragma once
// The owner of one file descriptor: it is closed when the owner is destroyed or reset, on every
// path out of a function, exceptions included. Move-only. In the lowest gateway layer so the
// backends, the jump host, the admin server and the gateway core can all use it (activity/ and
// config/ are below it and cannot; docs/architecture.md, Layers).
//
// Not for a descriptor an Asio socket or libssh will own: hand it over with release().
// Not between fork() and exec(): only async-signal-safe calls belong there, so the child closes
// raw descriptors (and never runs destructors: it execs or _exits).
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace spark::gateway {

class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  // Owns `fd` (-1 or any negative: owns nothing, so a failed open() can be wrapped directly).
  explicit UniqueFd(int fd) noexcept : fd_(fd < 0 ? -1 : fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }

  // Gives up ownership without closing: the caller (or Asio, or libssh) closes it now.
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }

  // Closes what it owns, if anything, and owns `fd` instead. errno is left as it was, so a
  // descriptor closed on the way out of a failed call does not hide that call's error.
  void reset(int fd = -1) noexcept {
    const int old = std::exchange(fd_, fd < 0 ? -1 : fd);
    if (old < 0 || old == fd_) return;
    const int saved = errno;
    close_once(old);
    errno = saved;
  }

  // Closes now and says how that went: 0, or -1 with errno (a delayed write error some file
  // systems report only here). Owns nothing afterwards, whatever the result. Closing nothing is 0.
  int close() noexcept {
    const int old = std::exchange(fd_, -1);
    return old < 0 ? 0 : close_once(old);
  }

 private:
  // Exactly one close(2), never retried: on Linux the descriptor is released even when close
  // fails, EINTR included, so a retry could only close a number another thread has just been
  // given. EINTR (a signal during a flush at close) counts as success: it is not a write error
  // (those come as EIO, ENOSPC, ...), and callers that need their data on disk fsync first.
  static int close_once(int fd) noexcept {
    if (::close(fd) == 0 || errno == EINTR) return 0;
    return -1;
  }

  int fd_ = -1;
};

}  // namespace spark::gateway
