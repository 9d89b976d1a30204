// Unit tests for gateway/backend/child_process.hpp: a child inherits stdin, stdout and stderr
// and no other file descriptor of the gateway (issue 17), however those were opened.
#include "gateway/backend/child_process.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace spark::gateway {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::set<int> open_fds_of(pid_t pid) {
  std::set<int> fds;
  for (const auto& entry : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd"))
    fds.insert(std::stoi(entry.path().filename().string()));
  return fds;
}

std::string target_of(pid_t pid, int fd) {
  std::error_code ec;
  return fs::read_symlink("/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd), ec).string();
}

// What a gateway holds: fds opened without close-on-exec, as Asio and libssh open sockets.
struct InheritableFds {
  std::vector<int> fds;
  InheritableFds() {
    const int listener = ::socket(AF_INET, SOCK_STREAM, 0);  // no SOCK_CLOEXEC
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(listener, 16);
    fds.push_back(listener);
    int p[2];
    if (::pipe(p) == 0) fds.insert(fds.end(), {p[0], p[1]});
    fds.push_back(::open("/dev/null", O_RDONLY));
    fds.push_back(::fcntl(listener, F_DUPFD, 200));  // a high number too
  }
  ~InheritableFds() {
    for (int fd : fds) ::close(fd);
  }
};

TEST(ChildProcess, InheritsOnlyStdinStdoutAndStderr) {
  InheritableFds held;
  for (int fd : held.fds) ASSERT_GE(fd, 3);
  ChildProcess child({"sleep", "30"}, fs::temp_directory_path(), "fd-test");
  // The constructor returns once exec has happened (the report pipe closed on exec), but the
  // dynamic loader of `sleep` may still have a library open for a moment: an inherited fd stays.
  const std::set<int> stdio{0, 1, 2};
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (open_fds_of(child.pid()) != stdio && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(open_fds_of(child.pid()), stdio);
  EXPECT_EQ(target_of(child.pid(), 0), "/dev/null");
  EXPECT_THAT(target_of(child.pid(), 1), ::testing::StartsWith("pipe:"));
  EXPECT_EQ(target_of(child.pid(), 2), target_of(child.pid(), 1));
  child.terminate(1s);
}

TEST(ChildProcess, AnExecFailureIsStillReported) {
  InheritableFds held;
  try {
    ChildProcess child({"/nonexistent/program"}, fs::temp_directory_path(), "fd-test");
    FAIL() << "a program that does not exist was started";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("No such file or directory"));
  }
}

// Runs `close` in a forked child holding inheritable fds (one at 1000); true if afterwards
// nothing above 2 is open.
template <typename Close>
bool closes_everything_above_stderr(Close close) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    InheritableFds held;
    ::dup2(held.fds[0], 1000);
    close(3);
    for (int fd = 3; fd < 2048; ++fd)
      if (::fcntl(fd, F_GETFD) != -1) ::_exit(1);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST(CloseDescriptors, CloseRangeClosesEverythingFromFirst) {
  EXPECT_TRUE(closes_everything_above_stderr([](int first) { close_descriptors_from(first); }));
}

TEST(CloseDescriptors, TheProcListingFallbackClosesEverythingFromFirst) {
  EXPECT_TRUE(closes_everything_above_stderr([](int first) { detail::close_descriptors_by_listing(first); }));
}

}  // namespace
}  // namespace spark::gateway
