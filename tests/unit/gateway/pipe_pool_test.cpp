// Unit tests for gateway/pipe_pool.hpp: the bounded pool of pipes splice(2) borrows for bulk
// flows, and Pipe, the owner of one pipe's two fds.
#include "gateway/pipe_pool.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <fstream>
#include <optional>
#include <set>
#include <utility>
#include <vector>

namespace spark::gateway {
namespace {

constexpr std::size_t KiB = 1024;

bool fd_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

int pipe_size(const Pipe& p) { return ::fcntl(p.write_fd(), F_GETPIPE_SZ); }

// One byte through the pipe: it is a working, connected pair.
bool round_trips(const Pipe& p) {
  const char out = 'x';
  char in = 0;
  return ::write(p.write_fd(), &out, 1) == 1 && ::read(p.read_fd(), &in, 1) == 1 && in == out;
}

// Nothing to read (and the read end is non-blocking, so this does not wait).
bool is_empty(const Pipe& p) {
  char c;
  return ::read(p.read_fd(), &c, 1) == -1 && errno == EAGAIN;
}

void expect_nonblocking_cloexec(const Pipe& p) {
  for (int fd : {p.read_fd(), p.write_fd()}) {
    SCOPED_TRACE("fd " + std::to_string(fd));
    const int fl = ::fcntl(fd, F_GETFL);
    ASSERT_NE(fl, -1);
    EXPECT_TRUE(fl & O_NONBLOCK);
    const int fdfl = ::fcntl(fd, F_GETFD);
    ASSERT_NE(fdfl, -1);
    EXPECT_TRUE(fdfl & FD_CLOEXEC);
  }
}

// ---------------------------------------------------------------------------
// Bounds
// ---------------------------------------------------------------------------

TEST(PipePool, AcquiresUpToMaxThenNullopt) {
  PipePool pool(3, 64 * KiB);
  EXPECT_EQ(pool.in_use(), 0u);
  std::vector<Pipe> held;
  std::set<int> fds;
  for (std::size_t i = 0; i < 3; ++i) {
    std::optional<Pipe> p = pool.acquire();
    ASSERT_TRUE(p.has_value()) << "pipe " << i;
    EXPECT_EQ(pool.in_use(), i + 1);
    EXPECT_TRUE(round_trips(*p));
    fds.insert(p->read_fd());
    fds.insert(p->write_fd());
    held.push_back(std::move(*p));
  }
  EXPECT_EQ(fds.size(), 6u) << "every pipe has its own two fds";
  EXPECT_FALSE(pool.acquire().has_value());
  EXPECT_FALSE(pool.acquire().has_value());
  EXPECT_EQ(pool.in_use(), 3u) << "a refused acquire takes no slot";
}

TEST(PipePool, ZeroMaxNeverHandsOutAPipe) {
  PipePool pool(0, 64 * KiB);
  EXPECT_FALSE(pool.acquire().has_value());
  EXPECT_EQ(pool.in_use(), 0u);
}

// While another bulk flow holds a pipe, a released pipe is kept and handed out again.
TEST(PipePool, ReleaseThenAcquireReusesTheSamePipe) {
  PipePool pool(2, 64 * KiB);
  std::optional<Pipe> busy = pool.acquire();
  std::optional<Pipe> p = pool.acquire();
  ASSERT_TRUE(busy && p);
  const int r = p->read_fd();
  const int w = p->write_fd();
  EXPECT_FALSE(pool.acquire().has_value());

  pool.release(std::move(*p));
  p.reset();
  EXPECT_EQ(pool.in_use(), 1u);
  EXPECT_EQ(pool.idle(), 1u);
  EXPECT_TRUE(fd_open(r) && fd_open(w)) << "an idle pipe is kept open for reuse";

  std::optional<Pipe> again = pool.acquire();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->read_fd(), r);
  EXPECT_EQ(again->write_fd(), w);
  EXPECT_EQ(pool.in_use(), 2u);
  EXPECT_TRUE(round_trips(*again));
  EXPECT_FALSE(pool.acquire().has_value());
}

TEST(PipePool, IdlePipesCountTowardsTheMaximum) {
  PipePool pool(3, 64 * KiB);
  std::optional<Pipe> busy = pool.acquire();
  std::optional<Pipe> a = pool.acquire();
  std::optional<Pipe> b = pool.acquire();
  ASSERT_TRUE(busy && a && b);
  const std::set<int> first{a->read_fd(), b->read_fd()};
  pool.release(std::move(*a));
  pool.release(std::move(*b));
  EXPECT_EQ(pool.in_use(), 1u);

  std::optional<Pipe> x = pool.acquire();
  std::optional<Pipe> y = pool.acquire();
  ASSERT_TRUE(x && y);
  EXPECT_EQ((std::set<int>{x->read_fd(), y->read_fd()}), first) << "both came from the idle list";
  EXPECT_FALSE(pool.acquire().has_value()) << "at most max_pipes exist, in use or idle";
  EXPECT_EQ(pool.in_use(), 3u);
}

// Once the last bulk flow has ended, a quiet gateway holds no pipe fds: the fds it had before
// the burst are all it has after it.
TEST(PipePool, TheLastPipeBackClosesEveryIdlePipe) {
  PipePool pool(4, 64 * KiB);
  std::vector<Pipe> held;
  std::vector<int> fds;
  for (int i = 0; i < 3; ++i) {
    std::optional<Pipe> p = pool.acquire();
    ASSERT_TRUE(p.has_value());
    fds.insert(fds.end(), {p->read_fd(), p->write_fd()});
    held.push_back(std::move(*p));
  }
  pool.release(std::move(held[0]));
  pool.release(std::move(held[1]));
  EXPECT_EQ(pool.idle(), 2u);
  EXPECT_TRUE(fd_open(fds[0]) && fd_open(fds[2]));
  pool.release(std::move(held[2]));
  EXPECT_EQ(pool.in_use(), 0u);
  EXPECT_EQ(pool.idle(), 0u);
  for (int fd : fds) EXPECT_FALSE(fd_open(fd)) << "fd " << fd;
  std::optional<Pipe> fresh = pool.acquire();
  ASSERT_TRUE(fresh.has_value()) << "a new bulk flow gets a new pipe";
  EXPECT_TRUE(round_trips(*fresh));
}

// The same when the last pipe in use was dropped (it held data) rather than released.
TEST(PipePool, ForgettingTheLastPipeClosesEveryIdlePipe) {
  PipePool pool(4, 64 * KiB);
  std::optional<Pipe> a = pool.acquire();
  std::optional<Pipe> b = pool.acquire();
  ASSERT_TRUE(a && b);
  const int r = a->read_fd();
  pool.release(std::move(*a));
  EXPECT_TRUE(fd_open(r));
  b.reset();
  pool.forget();
  EXPECT_EQ(pool.idle(), 0u);
  EXPECT_FALSE(fd_open(r));
}

TEST(PipePool, ForgetFreesTheSlotOfADestroyedPipe) {
  PipePool pool(1, 64 * KiB);
  std::optional<Pipe> p = pool.acquire();
  ASSERT_TRUE(p.has_value());
  const char c = 'z';
  ASSERT_EQ(::write(p->write_fd(), &c, 1), 1);  // it holds data: must not go back to the pool
  const int r = p->read_fd();
  const int w = p->write_fd();
  p.reset();  // destroyed, not released
  EXPECT_FALSE(fd_open(r) || fd_open(w)) << "destroying a Pipe closes both fds";
  EXPECT_EQ(pool.in_use(), 1u) << "the pool cannot know until told";
  EXPECT_FALSE(pool.acquire().has_value());

  pool.forget();
  EXPECT_EQ(pool.in_use(), 0u);
  std::optional<Pipe> fresh = pool.acquire();
  ASSERT_TRUE(fresh.has_value()) << "forget() must give the slot back";
  EXPECT_TRUE(is_empty(*fresh)) << "the new pipe must not see the dropped pipe's byte";
  EXPECT_EQ(pool.in_use(), 1u);
}

// The idle list is capped (kMaxIdle = 64 in pipe_pool.cpp): released pipes beyond it are
// closed, not leaked, and their slots are free again.
TEST(PipePool, ReleasedPipesBeyondTheIdleCapAreClosed) {
  constexpr std::size_t kCount = 70;
  PipePool pool(100, 64 * KiB);
  std::optional<Pipe> busy = pool.acquire();  // a flow that goes on: idle pipes are kept
  ASSERT_TRUE(busy.has_value());
  std::vector<Pipe> held;
  for (std::size_t i = 0; i < kCount; ++i) {
    std::optional<Pipe> p = pool.acquire();
    ASSERT_TRUE(p.has_value()) << i;
    held.push_back(std::move(*p));
  }
  std::size_t kept = 0;
  for (Pipe& p : held) {
    const int r = p.read_fd();
    const int w = p.write_fd();
    pool.release(std::move(p));
    EXPECT_EQ(fd_open(r), fd_open(w));
    if (fd_open(r)) ++kept;
  }
  EXPECT_EQ(pool.in_use(), 1u);
  EXPECT_EQ(kept, 64u);
  for (std::size_t i = 0; i < kCount; ++i) {
    ASSERT_TRUE(pool.acquire().has_value()) << i;  // idle ones first, then new ones
  }
  EXPECT_EQ(pool.in_use(), kCount + 1);
}

// ---------------------------------------------------------------------------
// The pipes
// ---------------------------------------------------------------------------

TEST(PipePool, PipesAreNonBlockingAndCloseOnExec) {
  PipePool pool(2, 64 * KiB);
  std::optional<Pipe> p = pool.acquire();
  ASSERT_TRUE(p.has_value());
  expect_nonblocking_cloexec(*p);
  EXPECT_TRUE(is_empty(*p)) << "an empty read end returns EAGAIN, it does not block";
  pool.release(std::move(*p));
  std::optional<Pipe> reused = pool.acquire();
  ASSERT_TRUE(reused.has_value());
  expect_nonblocking_cloexec(*reused);
}

std::size_t pipe_max_size() {
  std::ifstream in("/proc/sys/fs/pipe-max-size");
  std::size_t n = 0;
  in >> n;
  return n;
}

TEST(PipePool, CapacityIsHonoured) {
  PipePool pool(1, 256 * KiB);
  EXPECT_EQ(pool.pipe_bytes(), 256 * KiB);
  std::optional<Pipe> p = pool.acquire();
  ASSERT_TRUE(p.has_value());
  const int size = pipe_size(*p);
  if (pipe_max_size() >= 256 * KiB || ::geteuid() == 0) {
    EXPECT_EQ(size, static_cast<int>(256 * KiB));
  } else {  // the kernel may refuse; the default pipe is fine
    EXPECT_GE(size, static_cast<int>(64 * KiB));
  }
}

TEST(PipePool, CapacityIsRoundedUpByTheKernel) {
  PipePool pool(1, 100'000);
  std::optional<Pipe> p = pool.acquire();
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(pipe_size(*p), static_cast<int>(128 * KiB));  // next power-of-two number of pages
}

TEST(PipePool, RefusedCapacityLeavesTheDefaultPipe) {
  // Far beyond what F_SETPIPE_SZ accepts (EINVAL even for root): the pipe keeps the default.
  PipePool pool(1, std::size_t{3} * 1024 * 1024 * 1024);
  std::optional<Pipe> p = pool.acquire();
  ASSERT_TRUE(p.has_value()) << "a refused resize is not a failure to create the pipe";
  EXPECT_GE(pipe_size(*p), static_cast<int>(64 * KiB));
  EXPECT_TRUE(round_trips(*p));
}

// pipe2() failing (here: EMFILE) means nullopt, and no slot is taken.
TEST(PipePool, CreationFailureIsNulloptAndTakesNoSlot) {
  PipePool pool(4, 64 * KiB);
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit none = saved;
  none.rlim_cur = 0;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &none), 0);
  const std::optional<Pipe> p = pool.acquire();
  const std::size_t in_use = pool.in_use();
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);

  EXPECT_FALSE(p.has_value());
  EXPECT_EQ(in_use, 0u);
  std::vector<Pipe> held;
  for (int i = 0; i < 4; ++i) {
    std::optional<Pipe> q = pool.acquire();
    ASSERT_TRUE(q.has_value()) << "slot " << i << " was lost to the failed creation";
    held.push_back(std::move(*q));
  }
}

// ---------------------------------------------------------------------------
// Pipe: the owner of two fds
// ---------------------------------------------------------------------------

TEST(Pipe, MoveTransfersOwnership) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  Pipe a(fds[0], fds[1]);
  Pipe b(std::move(a));
  EXPECT_EQ(a.read_fd(), -1);  // NOLINT(bugprone-use-after-move): moved-from state is specified
  EXPECT_EQ(a.write_fd(), -1);
  EXPECT_EQ(b.read_fd(), fds[0]);
  EXPECT_EQ(b.write_fd(), fds[1]);
  EXPECT_TRUE(round_trips(b));
}

TEST(Pipe, MoveAssignmentClosesWhatItHeld) {
  int first[2], second[2];
  ASSERT_EQ(::pipe2(first, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(second, O_CLOEXEC), 0);
  Pipe a(first[0], first[1]);
  Pipe b(second[0], second[1]);
  a = std::move(b);
  EXPECT_FALSE(fd_open(first[0]) || fd_open(first[1]));
  EXPECT_EQ(a.read_fd(), second[0]);
  EXPECT_EQ(a.write_fd(), second[1]);
  EXPECT_EQ(b.read_fd(), -1);  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(round_trips(a));
}

TEST(Pipe, DestructorClosesBothFds) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  { Pipe p(fds[0], fds[1]); }
  EXPECT_FALSE(fd_open(fds[0]));
  EXPECT_FALSE(fd_open(fds[1]));
}

}  // namespace
}  // namespace spark::gateway
