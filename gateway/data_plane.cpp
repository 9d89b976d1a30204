#include "gateway/data_plane.hpp"

#include <pthread.h>

#include <algorithm>
#include <string>

#include <spdlog/spdlog.h>

namespace spark::gateway {

DataPlane::DataPlane(asio::io_context& main, int threads, std::size_t max_pipes) {
  if (threads <= 0) {
    workers_.push_back(std::make_unique<DataWorker>(main.get_executor(), max_pipes));
    return;
  }
  const std::size_t pipes_each = std::max<std::size_t>(1, max_pipes / static_cast<std::size_t>(threads));
  for (int i = 0; i < threads; ++i) {
    auto t = std::make_unique<Thread>();
    workers_.push_back(std::make_unique<DataWorker>(t->io.get_executor(), pipes_each));
    t->thread = std::thread([io = &t->io, i] {
      const std::string name = "data-" + std::to_string(i);  // as shown by top -H and ps -L
      ::pthread_setname_np(::pthread_self(), name.c_str());
      for (;;) {
        try {
          io->run();
          return;
        } catch (const std::exception& e) {  // a splice never throws out of its coroutine; be safe
          spdlog::error("data worker {}: {}", i, e.what());
        }
      }
    });
    threads_.push_back(std::move(t));
  }
}

DataPlane::~DataPlane() {
  for (auto& t : threads_) {
    t->keep_running.reset();
    t->io.stop();
  }
  for (auto& t : threads_) t->thread.join();
}

DataWorker& DataPlane::next() {
  DataWorker& w = *workers_[next_];
  next_ = (next_ + 1) % workers_.size();
  return w;
}

}  // namespace spark::gateway
