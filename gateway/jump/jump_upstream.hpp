#pragma once
// A jump session's upstream as the main loop sees it, in the connection registry beside TCP
// connections. The session (a libssh thread) owns the socket and closes it when it ends; this
// holds a duplicate of the descriptor, so shutting the socket down from the main loop (drain
// timeout, forced sleep) can never hit a descriptor number the session has closed and the
// process reused. The session sees its upstream end and reports upstream_ended() as usual.
#include <sys/socket.h>
#include <unistd.h>

#include <memory>

#include "gateway/backend/unique_fd.hpp"
#include "gateway/connection.hpp"
#include "gateway/spark.hpp"

namespace spark::gateway {

class JumpUpstream final : public LiveSession {
 public:
  // Duplicates `fd` now: call before the session may own (and close) it.
  JumpUpstream(std::shared_ptr<Spark> spark, int fd) : spark_(std::move(spark)), fd_(::dup(fd)) {}
  JumpUpstream(const JumpUpstream&) = delete;
  JumpUpstream& operator=(const JumpUpstream&) = delete;

  const Spark& spark() const override { return *spark_; }
  Spark& owner() { return *spark_; }
  void force_close() override {
    if (fd_) ::shutdown(fd_.get(), SHUT_RDWR);
  }

 private:
  std::shared_ptr<Spark> spark_;
  UniqueFd fd_;  // empty if dup failed (out of descriptors): then only the session ends it
};

}  // namespace spark::gateway
