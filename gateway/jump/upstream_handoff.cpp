#include <unistd.h>

#include "gateway/jump/jump_gateway.hpp"

namespace spark::gateway {

UpstreamHandoff::~UpstreamHandoff() {
  if (fd_ >= 0) ::close(fd_);
}

bool UpstreamHandoff::deliver(int fd, std::string error) {
  {
    std::lock_guard lock(mu_);
    if (abandoned_) return false;
    done_ = true;
    fd_ = fd;
    error_ = std::move(error);
  }
  delivered_.notify_all();
  return true;
}

bool UpstreamHandoff::wait_for(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return delivered_.wait_for(lock, timeout, [this] { return done_; });
}

int UpstreamHandoff::take_fd() {
  std::lock_guard lock(mu_);
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

std::string UpstreamHandoff::error() const {
  std::lock_guard lock(mu_);
  return error_;
}

bool UpstreamHandoff::abandon() {
  std::lock_guard lock(mu_);
  abandoned_ = true;
  if (fd_ < 0) return false;
  ::close(fd_);
  fd_ = -1;
  return true;
}

}  // namespace spark::gateway
