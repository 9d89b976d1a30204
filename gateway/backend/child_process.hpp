#pragma once
// A supervised child process: argv only (never a shell), its own process group, killed if the
// gateway dies (PR_SET_PDEATHSIG), output relayed line by line to the log. It inherits stdin
// (/dev/null), stdout and stderr (the relay pipe) and no other file descriptor of the gateway.
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gateway/backend/unique_fd.hpp"

namespace spark::gateway {

// "exited with status 1", "killed by signal 9 (Killed)".
std::string describe_wait_status(int status);

// Closes every file descriptor numbered `first` or above: close_range(2), or where the kernel
// lacks it (before 5.9) the fds listed in /proc/self/fd. Async-signal-safe: it runs between fork
// and exec, where a multithreaded gateway may call nothing else.
void close_descriptors_from(int first);
namespace detail {
void close_descriptors_by_listing(int first);  // the fallback (exposed for tests)
}

class ChildProcess {
 public:
  // Starts `argv` in `cwd`. Throws std::runtime_error if it cannot be started (e.g. the program
  // does not exist). `log_name` prefixes its output lines in the gateway's log.
  ChildProcess(const std::vector<std::string>& argv, const std::filesystem::path& cwd,
               std::string log_name);
  // Kills the whole process group if still running, then reaps it.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool running() const;
  // The raw wait status once it has exited.
  std::optional<int> exit_status() const;
  // True if it exited within `timeout`.
  bool wait_for_exit(std::chrono::milliseconds timeout) const;
  // SIGTERM to the process group, SIGKILL after `grace`; returns once it has exited.
  void terminate(std::chrono::milliseconds grace);
  // The last lines it printed (for error messages).
  std::string recent_output() const;

 private:
  void adopt(pid_t pid, UniqueFd output);  // the child is running: take it over
  void supervise();  // the child's own thread: relays output, reaps on exit
  void signal_group(int sig) const;

  std::string log_name_;
  pid_t pid_ = -1;
  UniqueFd pidfd_;
  UniqueFd output_fd_;  // the read end of the child's stdout and stderr
  mutable std::mutex mu_;
  mutable std::condition_variable exited_cv_;
  std::optional<int> status_;
  std::deque<std::string> recent_;
  std::thread supervisor_;
};

}  // namespace spark::gateway
