#include "gateway/pipe_pool.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <utility>

namespace spark::gateway {
namespace {
// Idle pipes kept for reuse; the rest are closed on release (their fds are not free).
constexpr std::size_t kMaxIdle = 64;
}  // namespace

PipePool::PipePool(std::size_t max_pipes, std::size_t pipe_bytes)
    : max_pipes_(max_pipes), pipe_bytes_(pipe_bytes) {}

std::optional<Pipe> PipePool::acquire() {
  if (!idle_.empty()) {
    Pipe p = std::move(idle_.back());
    idle_.pop_back();
    ++in_use_;
    return p;
  }
  if (in_use_ >= max_pipes_) return std::nullopt;
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return std::nullopt;  // e.g. EMFILE: fall back
  // A bigger pipe means fewer splice calls per GiB; the kernel may refuse (pipe-max-size or
  // the user's pipe page budget), in which case the default 64 KiB pipe is fine.
  ::fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(pipe_bytes_));
  ++in_use_;
  return Pipe(fds[0], fds[1]);
}

void PipePool::release(Pipe pipe) {
  --in_use_;
  if (in_use_ > 0 && idle_.size() < kMaxIdle) idle_.push_back(std::move(pipe));
  close_idle_when_unused();
}

void PipePool::forget() {
  --in_use_;
  close_idle_when_unused();
}

// Pipes are kept for reuse only while bulk flows go on: once the last one has ended, a quiet
// gateway holds no pipe fds (a new bulk flow pays one pipe2 and one fcntl, nothing next to the
// thousands of splices it makes).
void PipePool::close_idle_when_unused() {
  if (in_use_ == 0) idle_.clear();
}

}  // namespace spark::gateway
