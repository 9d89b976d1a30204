#include "gateway/jump/jump_gateway.hpp"

namespace spark::gateway {

void UpstreamHandoff::admit() {
  {
    std::lock_guard lock(mu_);
    admitted_ = true;
  }
  changed_.notify_all();
}

void UpstreamHandoff::refuse(std::string why) {
  {
    std::lock_guard lock(mu_);
    refused_ = true;
    done_ = true;
    error_ = std::move(why);
  }
  changed_.notify_all();
}

bool UpstreamHandoff::deliver(int fd, std::string error) {
  {
    std::lock_guard lock(mu_);
    if (abandoned_) return false;
    admitted_ = true;
    done_ = true;
    fd_.reset(fd);
    error_ = std::move(error);
  }
  changed_.notify_all();
  return true;
}

bool UpstreamHandoff::wait_for_admission(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [this] { return admitted_ || done_; });
}

bool UpstreamHandoff::wait_for(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [this] { return done_; });
}

int UpstreamHandoff::take_fd() {
  std::lock_guard lock(mu_);
  return fd_.release();
}

std::string UpstreamHandoff::error() const {
  std::lock_guard lock(mu_);
  return error_;
}

bool UpstreamHandoff::refused() const {
  std::lock_guard lock(mu_);
  return refused_;
}

bool UpstreamHandoff::abandon() {
  std::lock_guard lock(mu_);
  abandoned_ = true;
  if (!fd_) return false;
  fd_.reset();
  return true;
}

void UpstreamHandoff::set_place(std::string place) {
  std::lock_guard lock(mu_);
  place_ = std::move(place);
}

std::string UpstreamHandoff::place() const {
  std::lock_guard lock(mu_);
  return place_;
}

bool UpstreamHandoff::answered() const {
  std::lock_guard lock(mu_);
  return done_ || abandoned_;
}

}  // namespace spark::gateway
