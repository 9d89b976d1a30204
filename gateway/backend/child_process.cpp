#include "gateway/backend/child_process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <spdlog/spdlog.h>
#include <stdexcept>

#include "gateway/backend/unique_fd.hpp"

namespace spark::gateway {
namespace {

constexpr std::size_t kRecentLines = 20;

// Raw syscalls: glibc 2.36's <sys/pidfd.h> lacks C++ linkage guards.
int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_send_signal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// Both ends of a pipe, owned.
struct FdPair {
  UniqueFd read;
  UniqueFd write;
};

FdPair make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// The linux_dirent64 records getdents64 fills in (glibc 2.36 has no wrapper for it).
struct LinuxDirent64 {
  ino64_t d_ino;
  off64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

// "123" -> 123; -1 for anything else ("." and "..").
int parse_fd(const char* name) {
  if (*name == '\0') return -1;
  int fd = 0;
  for (; *name; ++name) {
    if (*name < '0' || *name > '9' || fd > 100'000'000) return -1;
    fd = fd * 10 + (*name - '0');
  }
  return fd;
}

}  // namespace

namespace detail {

// Raw descriptors and ::close here, no UniqueFd: this runs in the child between fork and exec,
// where only async-signal-safe calls belong, and plain syscalls keep that plain to see.
void close_descriptors_by_listing(int first) {
  const int dir = ::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) {
    // No /proc: every number the fd table can hold.
    rlimit limit{};
    const rlim_t end = ::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY
                           ? limit.rlim_cur
                           : 65536;
    for (rlim_t fd = static_cast<rlim_t>(first); fd < end; ++fd) ::close(static_cast<int>(fd));
    return;
  }
  // The listing is read in numeric order and closing an entry does not disturb it; a second
  // pass from the start catches anything a concurrent change (none here: after fork) moved.
  alignas(LinuxDirent64) char buf[4096];
  for (int pass = 0; pass < 2; ++pass) {
    ::lseek(dir, 0, SEEK_SET);
    for (;;) {
      const long n = ::syscall(SYS_getdents64, dir, buf, sizeof buf);
      if (n <= 0) break;
      for (long off = 0; off < n;) {
        const auto* entry = reinterpret_cast<const LinuxDirent64*>(buf + off);
        const int fd = parse_fd(entry->d_name);
        if (fd >= first && fd != dir) ::close(fd);
        off += entry->d_reclen;
      }
    }
  }
  ::close(dir);
}

}  // namespace detail

void close_descriptors_from(int first) {
  if (::close_range(static_cast<unsigned>(first), ~0U, 0) == 0) return;
  detail::close_descriptors_by_listing(first);  // ENOSYS: a kernel before 5.9
}

namespace {

// -- the child, from fork to exec ------------------------------------------------------------
// Async-signal-safe calls only: the gateway is multithreaded, and another thread may have held a
// lock (malloc's, the logger's) at the fork. Raw descriptors and ::close, no UniqueFd. The child
// never returns (exec or _exit), so no destructor of the parent's objects, UniqueFds included,
// runs in it.

// The child gets stdin (/dev/null), stdout and stderr (the output pipe) and nothing else: not
// the spark listeners, the jump and admin listeners, other users' client and upstream sockets
// (which a daemonizing start script would otherwise hold across a gateway restart). Most of
// those fds are not close-on-exec (Asio and libssh open sockets without SOCK_CLOEXEC), so
// everything above 2 is closed here, which covers every fd however it was opened.
// What is kept must not be 0..2 before those are replaced (it is only if the gateway was
// started with them closed), so it moves up first. Returns where the exec-failure report is now.
int keep_only_stdio(int output_pipe, int report_pipe) {
  auto above_stderr = [](int fd) {
    if (fd < 0 || fd > STDERR_FILENO) return fd;
    const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    return moved >= 0 ? moved : fd;
  };
  const int in = above_stderr(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  const int output = above_stderr(output_pipe);
  int report = above_stderr(report_pipe);
  if (in >= 0) ::dup2(in, STDIN_FILENO);  // dup2 clears close-on-exec on 0..2
  ::dup2(output, STDOUT_FILENO);
  ::dup2(output, STDERR_FILENO);
  // The exec-failure report (close-on-exec) becomes fd 3, then 4 and up are closed.
  if (report != 3 && ::dup3(report, 3, O_CLOEXEC) == 3) report = 3;
  if (report == 3) {
    close_descriptors_from(4);
  } else {  // dup3 failed: keep `report` where it is
    for (int fd = 3; fd < report; ++fd) ::close(fd);
    close_descriptors_from(report > STDERR_FILENO ? report + 1 : STDERR_FILENO + 1);
  }
  return report;
}

// Runs `args` in `dir`; if that fails, writes the errno to `report_pipe` and exits 127.
[[noreturn]] void exec_child(pid_t parent, int output_pipe, int report_pipe, const char* dir, char* const* args) {
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);  // the gateway died before prctl took effect
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGPIPE, SIG_DFL);  // the gateway ignores SIGPIPE; exec would pass that on
  const int report = keep_only_stdio(output_pipe, report_pipe);
  int e = 0;
  if (::chdir(dir) != 0) {
    e = errno;
  } else {
    ::execvp(args[0], args);
    e = errno;
  }
  ssize_t ignored = ::write(report, &e, sizeof e);
  (void)ignored;
  ::_exit(127);
}

// The errno the child reported before it could exec, or nullopt: it did exec (which closed its
// end of `report`, close-on-exec) and is running.
std::optional<int> exec_failure(UniqueFd report) {
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(report.get(), &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof child_errno)) return child_errno;
  return std::nullopt;
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

  FdPair out = make_pipe();       // the child's stdout and stderr, relayed to the log
  FdPair err_pipe = make_pipe();  // reports an exec failure's errno; closed by a successful exec (CLOEXEC)
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    throw std::runtime_error(std::string("fork: ") + std::strerror(e));
  }
  if (pid == 0) exec_child(parent, out.write.get(), err_pipe.write.get(), dir.c_str(), args.data());
  out.write.reset();
  err_pipe.write.reset();
  if (const auto child_errno = exec_failure(std::move(err_pipe.read))) {
    out.read.reset();
    ::waitpid(pid, nullptr, 0);
    throw std::runtime_error("cannot run " + argv[0] + " in " + dir + ": " +
                             std::strerror(*child_errno));
  }
  adopt(pid, std::move(out.read));
}

void ChildProcess::adopt(pid_t pid, UniqueFd output) {
  pid_ = pid;
  ::setpgid(pid, pid);  // also from the parent, so signal_group() works from the first instant
  output_fd_ = std::move(output);
  const int pidfd = pidfd_open(pid);
  if (pidfd < 0) {
    const int e = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    output_fd_.reset();
    throw std::runtime_error(std::string("pidfd_open: ") + std::strerror(e));
  }
  pidfd_.reset(pidfd);
  spdlog::debug("{}: started pid {}", log_name_, pid_);
  supervisor_ = std::thread([this] { supervise(); });
}

ChildProcess::~ChildProcess() {
  if (running()) terminate(std::chrono::milliseconds(0));
  if (supervisor_.joinable()) supervisor_.join();
  // output_fd_ and pidfd_ close with the members, now that the supervisor reading them is done.
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
      const ssize_t n = ::read(output_fd_.get(), buf, sizeof buf);
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
    pollfd fds[2] = {{pidfd_.get(), POLLIN, 0}, {output_open ? output_fd_.get() : -1, POLLIN, 0}};
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
    ::fcntl(output_fd_.get(), F_SETFL, ::fcntl(output_fd_.get(), F_GETFL) | O_NONBLOCK);
    drain(false);
  }
  if (!partial.empty()) emit(partial);
  siginfo_t info{};
  int status = 0;
  if (::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED) == 0) {
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
  pidfd_send_signal(pidfd_.get(), sig);
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
