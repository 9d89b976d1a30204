// Unit tests for gateway/backend/unique_fd.hpp: the owner of one file descriptor closes it
// exactly once, on every path, and never when it has given it away.
#include "gateway/backend/unique_fd.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <type_traits>
#include <utility>
#include <vector>

namespace spark::gateway {
namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

int open_null() {
  const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << "open /dev/null";
  return fd;
}

// A number no descriptor can have (above the fd limit): close(2) on it fails with EBADF.
int never_open() {
  rlimit limit{};
  EXPECT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  return limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur > 1'000'000 ? 1'000'000
                                                                        : static_cast<int>(limit.rlim_cur) + 1;
}

static_assert(!std::is_copy_constructible_v<UniqueFd>);
static_assert(!std::is_copy_assignable_v<UniqueFd>);
static_assert(std::is_nothrow_move_constructible_v<UniqueFd>);
static_assert(std::is_nothrow_move_assignable_v<UniqueFd>);
static_assert(!std::is_convertible_v<UniqueFd, bool>, "operator bool must be explicit");
static_assert(!std::is_convertible_v<int, UniqueFd>, "taking ownership must be explicit");

TEST(UniqueFd, EmptyByDefault) {
  const UniqueFd fd;
  EXPECT_EQ(fd.get(), -1);
  EXPECT_FALSE(fd);
}

TEST(UniqueFd, NegativeMeansNothingOwned) {
  UniqueFd fd(::open("/nonexistent/unique_fd_test", O_RDONLY));  // a failed open wrapped as is
  EXPECT_FALSE(fd);
  EXPECT_EQ(fd.get(), -1);
  EXPECT_EQ(UniqueFd(-7).get(), -1);
  EXPECT_EQ(fd.close(), 0);
}

TEST(UniqueFd, ClosesOnDestruction) {
  const int raw = open_null();
  {
    const UniqueFd fd(raw);
    EXPECT_TRUE(fd);
    EXPECT_EQ(fd.get(), raw);
    EXPECT_TRUE(is_open(raw));
  }
  EXPECT_FALSE(is_open(raw));
}

TEST(UniqueFd, ClosesWhenAnExceptionLeavesTheScope) {
  const int raw = open_null();
  try {
    const UniqueFd fd(raw);
    throw 42;
  } catch (int) {
  }
  EXPECT_FALSE(is_open(raw));
}

TEST(UniqueFd, ReleaseGivesItAwayOpen) {
  const int raw = open_null();
  {
    UniqueFd fd(raw);
    EXPECT_EQ(fd.release(), raw);
    EXPECT_FALSE(fd);
    EXPECT_EQ(fd.get(), -1);
  }
  EXPECT_TRUE(is_open(raw));
  ::close(raw);
}

TEST(UniqueFd, ResetClosesTheOldAndOwnsTheNew) {
  const int first = open_null();
  const int second = open_null();
  UniqueFd fd(first);
  fd.reset(second);
  EXPECT_FALSE(is_open(first));
  EXPECT_TRUE(is_open(second));
  EXPECT_EQ(fd.get(), second);
  fd.reset();
  EXPECT_FALSE(is_open(second));
  EXPECT_FALSE(fd);
}

TEST(UniqueFd, ResetToTheSameDescriptorKeepsItOpen) {
  const int raw = open_null();
  UniqueFd fd(raw);
  fd.reset(raw);
  EXPECT_TRUE(is_open(raw));
  EXPECT_EQ(fd.get(), raw);
}

TEST(UniqueFd, ResetLeavesErrnoAlone) {
  UniqueFd fd(open_null());
  errno = ENOSPC;  // the error of the call that failed before the descriptor is dropped
  fd.reset();
  EXPECT_EQ(errno, ENOSPC);

  UniqueFd bad(never_open());  // even when close(2) itself fails
  errno = ENOSPC;
  bad.reset();
  EXPECT_EQ(errno, ENOSPC);
  EXPECT_FALSE(bad);
}

TEST(UniqueFd, MoveConstructionTransfersOwnership) {
  const int raw = open_null();
  UniqueFd from(raw);
  const UniqueFd to(std::move(from));
  EXPECT_FALSE(from);  // NOLINT(bugprone-use-after-move): moved-from is empty, by contract
  EXPECT_EQ(to.get(), raw);
  EXPECT_TRUE(is_open(raw));
}

TEST(UniqueFd, MoveAssignmentClosesWhatTheTargetHeld) {
  const int old_fd = open_null();
  const int new_fd = open_null();
  UniqueFd target(old_fd);
  UniqueFd source(new_fd);
  target = std::move(source);
  EXPECT_FALSE(is_open(old_fd));
  EXPECT_TRUE(is_open(new_fd));
  EXPECT_EQ(target.get(), new_fd);
  EXPECT_FALSE(source);  // NOLINT(bugprone-use-after-move)
}

TEST(UniqueFd, SelfMoveAssignmentKeepsItOpen) {
  const int raw = open_null();
  UniqueFd fd(raw);
  auto& same = fd;
  fd = std::move(same);
  EXPECT_EQ(fd.get(), raw);
  EXPECT_TRUE(is_open(raw));
}

TEST(UniqueFd, CloseReportsSuccessAndOwnsNothingAfter) {
  const int raw = open_null();
  UniqueFd fd(raw);
  EXPECT_EQ(fd.close(), 0);
  EXPECT_FALSE(fd);
  EXPECT_FALSE(is_open(raw));
  EXPECT_EQ(fd.close(), 0) << "closing nothing is not an error";
}

TEST(UniqueFd, CloseReportsAFailureOnceAndIsNotRetried) {
  UniqueFd fd(never_open());
  errno = 0;
  EXPECT_EQ(fd.close(), -1);
  EXPECT_EQ(errno, EBADF);
  EXPECT_FALSE(fd) << "after a failed close(2) the descriptor is gone on Linux: nothing to retry";
  EXPECT_EQ(fd.close(), 0);
}

TEST(UniqueFd, LivesInContainers) {
  std::vector<UniqueFd> fds;
  std::vector<int> raw;
  for (int i = 0; i < 20; ++i) {  // enough to make the vector reallocate (moves every element)
    raw.push_back(open_null());
    fds.emplace_back(raw.back());
  }
  for (const int fd : raw) EXPECT_TRUE(is_open(fd));
  fds.clear();
  for (const int fd : raw) EXPECT_FALSE(is_open(fd));
}

}  // namespace
}  // namespace spark::gateway
