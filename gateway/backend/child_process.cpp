#include "gateway/backend/child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <spdlog/spdlog.h>
#include <stdexcept>

namespace spark::gateway {
namespace {

constexpr std::size_t kRecentLines = 20;

// Raw syscalls: glibc 2.36's <sys/pidfd.h> lacks C++ linkage guards.
int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_send_signal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    return "killed by signal " + std::to_string(sig) + (name ? std::string(" (") + name + ")" : "");
  }
  return "ended with wait status " + std::to_string(status);
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv, const std::filesystem::path& cwd,
                           std::string log_name)
    : log_name_(std::move(log_name)) {
  if (argv.empty()) throw std::runtime_error("no command given");
  // Everything the child needs is prepared before fork: after it only async-signal-safe calls.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const std::string dir = cwd.string();

  int out[2];
  int err_pipe[2];  // reports an exec failure's errno; closed by a successful exec (CLOEXEC)
  if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    for (int fd : {out[0], out[1], err_pipe[0], err_pipe[1]}) ::close(fd);
    throw std::runtime_error(std::string("fork: ") + std::strerror(e));
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the gateway died before prctl took effect
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);  // the gateway ignores SIGPIPE; exec would pass that on
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(out[1], STDERR_FILENO);
    int e = 0;
    if (::chdir(dir.c_str()) != 0) {
      e = errno;
    } else {
      ::execvp(args[0], args.data());
      e = errno;
    }
    ssize_t ignored = ::write(err_pipe[1], &e, sizeof e);
    (void)ignored;
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err_pipe[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(err_pipe[0], &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  ::close(err_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof child_errno)) {
    ::close(out[0]);
    ::waitpid(pid, nullptr, 0);
    throw std::runtime_error("cannot run " + argv[0] + " in " + dir + ": " +
                             std::strerror(child_errno));
  }
  pid_ = pid;
  ::setpgid(pid, pid);  // also from the parent, so signal_group() works from the first instant
  output_fd_ = out[0];
  pidfd_ = pidfd_open(pid);
  if (pidfd_ < 0) {
    const int e = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    close_fd(output_fd_);
    throw std::runtime_error(std::string("pidfd_open: ") + std::strerror(e));
  }
  spdlog::debug("{}: started pid {}", log_name_, pid_);
  supervisor_ = std::thread([this] { supervise(); });
}

ChildProcess::~ChildProcess() {
  if (running()) terminate(std::chrono::milliseconds(0));
  if (supervisor_.joinable()) supervisor_.join();
  close_fd(output_fd_);
  close_fd(pidfd_);
}

void ChildProcess::supervise() {
  std::string partial;
  auto emit = [&](std::string line) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    spdlog::info("{}: {}", log_name_, line);
    std::lock_guard lock(mu_);
    recent_.push_back(std::move(line));
    if (recent_.size() > kRecentLines) recent_.pop_front();
  };
  auto drain = [&](bool block) {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(output_fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return n == 0;  // true: end of output
      partial.append(buf, static_cast<std::size_t>(n));
      for (std::size_t nl; (nl = partial.find('\n')) != std::string::npos;) {
        emit(partial.substr(0, nl));
        partial.erase(0, nl + 1);
      }
      if (!block) continue;
      return false;
    }
  };
  bool output_open = true;
  for (;;) {
    pollfd fds[2] = {{pidfd_, POLLIN, 0}, {output_open ? output_fd_ : -1, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents & (POLLIN | POLLHUP)) {
      if (drain(true)) output_open = false;
    }
    if (fds[0].revents & POLLIN) break;
  }
  // The child has exited. Take what is already buffered, but do not wait for grandchildren that
  // may still hold the pipe open.
  if (output_open) {
    ::fcntl(output_fd_, F_SETFL, ::fcntl(output_fd_, F_GETFL) | O_NONBLOCK);
    drain(false);
  }
  if (!partial.empty()) emit(partial);
  siginfo_t info{};
  int status = 0;
  if (::waitid(P_PIDFD, static_cast<id_t>(pidfd_), &info, WEXITED) == 0) {
    status = info.si_code == CLD_EXITED ? W_EXITCODE(info.si_status, 0) : info.si_status;
  }
  spdlog::debug("{}: pid {} {}", log_name_, pid_, describe_wait_status(status));
  {
    std::lock_guard lock(mu_);
    status_ = status;
  }
  exited_cv_.notify_all();
}

bool ChildProcess::running() const {
  std::lock_guard lock(mu_);
  return !status_.has_value();
}

std::optional<int> ChildProcess::exit_status() const {
  std::lock_guard lock(mu_);
  return status_;
}

bool ChildProcess::wait_for_exit(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return exited_cv_.wait_for(lock, timeout, [&] { return status_.has_value(); });
}

void ChildProcess::signal_group(int sig) const {
  // The group may already be gone; the pid itself is still ours until reaped, so also signal it.
  ::kill(-pid_, sig);
  pidfd_send_signal(pidfd_, sig);
}

void ChildProcess::terminate(std::chrono::milliseconds grace) {
  if (!running()) return;
  if (grace.count() > 0) {
    signal_group(SIGTERM);
    if (wait_for_exit(grace)) return;
    spdlog::warn("{}: pid {} still running {} ms after SIGTERM, sending SIGKILL", log_name_, pid_,
                 grace.count());
  }
  signal_group(SIGKILL);
  wait_for_exit(std::chrono::hours(1));
}

std::string ChildProcess::recent_output() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& l : recent_) out += (out.empty() ? "" : " | ") + l;
  return out;
}

}  // namespace spark::gateway
