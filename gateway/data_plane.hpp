#pragma once
// The threads that move bytes. Everything about sparks (waking, counting, sleeping) runs on the
// main io_context, one thread, no locks. Once a connection is spliced, its two sockets belong
// to one data worker: an io_context with a thread of its own, its own pipe pool and its own
// copy buffer, so established flows use every core while the control plane stays
// single-threaded. With no workers (`limits.data_threads` 0) the main io_context splices too.
//
// Ownership rule (it is what keeps this race-free): a socket handed to a worker is touched only
// on that worker's thread until the connection ends. Connection::force_close posts there.
#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

#include "gateway/asio.hpp"
#include "gateway/pipe_pool.hpp"

namespace spark::gateway {

class DataWorker {
 public:
  DataWorker(asio::any_io_executor executor, std::size_t max_pipes)
      : executor_(std::move(executor)), pipes_(max_pipes, kPipeBytes) {}

  const asio::any_io_executor& executor() const { return executor_; }
  PipePool& pipes() { return pipes_; }  // this worker's thread only

 private:
  static constexpr std::size_t kPipeBytes = 256 * 1024;
  asio::any_io_executor executor_;
  PipePool pipes_;
};

class DataPlane {
 public:
  // `threads` workers (0: the main io_context does it all). Pipes for splice(2) cost 2 fds
  // each, so `max_pipes` is shared out between the workers; beyond it flows use read/write.
  DataPlane(asio::io_context& main, int threads, std::size_t max_pipes);
  ~DataPlane();  // stops and joins the workers
  DataPlane(const DataPlane&) = delete;
  DataPlane& operator=(const DataPlane&) = delete;

  // The worker for the next connection (round robin). Main thread only.
  DataWorker& next();
  int threads() const { return static_cast<int>(threads_.size()); }

 private:
  struct Thread {
    asio::io_context io;  // not hinted single-threaded: the main thread starts accepts and connects on it
    asio::executor_work_guard<asio::io_context::executor_type> keep_running{io.get_executor()};
    std::thread thread;
  };
  std::vector<std::unique_ptr<Thread>> threads_;
  std::vector<std::unique_ptr<DataWorker>> workers_;
  std::size_t next_ = 0;
};

}  // namespace spark::gateway
