#pragma once
// A bounded pool of pipes for splice(2). Thousands of connections must not each hold a pipe
// (two fds and up to the pipe's pages): a pipe is taken only while a flow is bulk, and given
// back empty. When the pool is exhausted, callers fall back to read/write.
#include <cstddef>
#include <optional>
#include <vector>

#include "gateway/backend/unique_fd.hpp"

namespace spark::gateway {

// Both ends of one pipe, closed with it. Move-only.
class Pipe {
 public:
  Pipe(int read_fd, int write_fd) : read_(read_fd), write_(write_fd) {}

  int read_fd() const { return read_.get(); }
  int write_fd() const { return write_.get(); }

 private:
  UniqueFd read_;
  UniqueFd write_;
};

class PipePool {
 public:
  // At most `max_pipes` exist at once (in use or idle); each holds up to `pipe_bytes`.
  PipePool(std::size_t max_pipes, std::size_t pipe_bytes);

  // An empty pipe, or nullopt if the pool is exhausted (or pipe creation failed).
  std::optional<Pipe> acquire();
  // Returns an EMPTY pipe for reuse while other pipes are in use; the last one back closes
  // every idle pipe. A pipe that may hold data must be dropped instead (destroyed), which also
  // frees its slot via forget().
  void release(Pipe pipe);
  // A pipe taken from the pool was destroyed instead of released.
  void forget();

  std::size_t pipe_bytes() const { return pipe_bytes_; }
  std::size_t in_use() const { return in_use_; }
  std::size_t idle() const { return idle_.size(); }

 private:
  void close_idle_when_unused();
  std::size_t max_pipes_;
  std::size_t pipe_bytes_;
  std::size_t in_use_ = 0;
  std::vector<Pipe> idle_;
};

}  // namespace spark::gateway
