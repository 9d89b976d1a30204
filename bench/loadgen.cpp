// The benchmark load tool (bench/run, docs/benchmarks.md): an echo server, and clients that
// measure connection rate, the round trip of an established connection, many idle connections,
// and the time to a server's first byte (wake overhead). Plain POSIX sockets, epoll and threads;
// IPv4 loopback only (any other address is refused); every client is bounded in count and time.
//
//   loadgen serve PORT [--banner] [--delay-ms N [--jitter-ms J]] [--stamp FILE]
//       epoll echo server on 127.0.0.1:PORT. --banner: send one byte on accept (as sshd sends
//       its version line first). --delay-ms: sleep N ms (plus a random 0..J) before listening,
//       as a spark takes time to boot. --stamp: once listening, write "START_NS LISTEN_NS" to
//       FILE atomically (CLOCK_MONOTONIC: when this process started, when it began listening).
//   loadgen connrate HOST PORT SECONDS WORKERS
//       connect, 1-byte echo, close, in WORKERS threads for SECONDS; prints "CONNS_PER_S FAILED"
//   loadgen latency HOST PORT ROUNDS [BYTES]
//       BYTES-byte (default 64) ping-pong on one connection after 1000 warm-up rounds; prints
//       "p50 p90 p99 p99.9 max" in microseconds (bounded: 20 s)
//   loadgen idle HOST PORT COUNT HOLD_SECONDS
//       opens COUNT connections, echoes one byte on each (so each is spliced end to end), prints
//       "open N" and holds them until SIGUSR1 or HOLD_SECONDS, closes them, prints "closed"
//   loadgen first-byte HOST PORT
//       connects, sends an SSH identification line at once (as OpenSSH's ssh does, and as the
//       gateway waits for before it wakes a spark) and reads the server's first byte (its
//       banner); prints "CONNECT_NS BYTE_NS" (CLOCK_MONOTONIC, comparable with --stamp);
//       bounded: 30 s
//
// Build: g++ -O2 -std=c++20 -pthread bench/loadgen.cpp -o loadgen
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "loadgen: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

long long monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

sockaddr_in loopback_address(const char* host, int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    std::fprintf(stderr, "loadgen: %s is not an IPv4 address\n", host);
    std::exit(2);
  }
  if ((ntohl(addr.sin_addr.s_addr) >> 24) != 127) {  // loopback only, never another host
    std::fprintf(stderr, "loadgen: %s is not a loopback address\n", host);
    std::exit(2);
  }
  return addr;
}

void set_nodelay(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// A blocking connect with TCP_NODELAY; -1 on failure (errno kept).
int connect_to(const sockaddr_in& addr) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
    return -1;
  }
  set_nodelay(fd);
  return fd;
}

// Bounded reads: a stuck proxy must not hang the benchmark.
void set_timeout(int fd, int seconds) {
  timeval tv{seconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

bool read_exact(int fd, char* buf, size_t n) {
  while (n > 0) {
    const auto got = ::read(fd, buf, n);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    buf += got;
    n -= static_cast<size_t>(got);
  }
  return true;
}

bool write_all(int fd, const char* buf, size_t n) {
  while (n > 0) {
    const auto put = ::send(fd, buf, n, MSG_NOSIGNAL);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) return false;
    buf += put;
    n -= static_cast<size_t>(put);
  }
  return true;
}

void raise_fd_limit() {
  rlimit l{};
  if (::getrlimit(RLIMIT_NOFILE, &l) == 0 && l.rlim_cur < l.rlim_max) {
    l.rlim_cur = l.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &l);
  }
}

// ---- the echo server: one thread, epoll, non-blocking sockets -----------------------------

int serve(int port, bool banner, int delay_ms, int jitter_ms, const std::string& stamp) {
  const long long started = monotonic_ns();
  raise_fd_limit();
  std::signal(SIGPIPE, SIG_IGN);
  if (jitter_ms > 0) {  // a random phase against the gateway's probe interval
    ::srand(static_cast<unsigned>(started ^ ::getpid()));
    delay_ms += ::rand() % (jitter_ms + 1);
  }
  if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const sockaddr_in addr = loopback_address("127.0.0.1", port);
  if (::bind(listener, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) die("bind");
  if (::listen(listener, 4096) != 0) die("listen");
  if (!stamp.empty()) {  // the moment a probe can succeed
    const std::string tmp = stamp + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (!f) die("stamp");
    std::fprintf(f, "%lld %lld\n", started, monotonic_ns());
    std::fclose(f);
    if (std::rename(tmp.c_str(), stamp.c_str()) != 0) die("stamp rename");
  }
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listener;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
  std::unordered_map<int, std::string> pending;  // bytes a slow reader could not take yet
  std::vector<epoll_event> events(256);
  static char buf[65536];
  auto drop = [&](int fd) {
    ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    pending.erase(fd);
  };
  for (;;) {
    const int n = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[static_cast<size_t>(i)].data.fd;
      if (fd == listener) {
        for (;;) {
          const int c = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;
          set_nodelay(c);
          if (banner) {
            const char b = 'B';
            if (::send(c, &b, 1, MSG_NOSIGNAL) != 1) {
              ::close(c);
              continue;
            }
          }
          epoll_event cev{};
          cev.events = EPOLLIN | EPOLLRDHUP;
          cev.data.fd = c;
          ::epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      auto it = pending.find(fd);
      if (it != pending.end()) {  // writable again: flush, then read on
        const auto put = ::send(fd, it->second.data(), it->second.size(), MSG_NOSIGNAL);
        if (put < 0 && errno != EAGAIN) {
          drop(fd);
          continue;
        }
        if (put > 0) it->second.erase(0, static_cast<size_t>(put));
        if (!it->second.empty()) continue;
        pending.erase(it);
        epoll_event cev{};
        cev.events = EPOLLIN | EPOLLRDHUP;
        cev.data.fd = fd;
        ::epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
      }
      const auto got = ::recv(fd, buf, sizeof buf, 0);
      if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
        drop(fd);
        continue;
      }
      if (got < 0) continue;
      auto put = ::send(fd, buf, static_cast<size_t>(got), MSG_NOSIGNAL);
      if (put < 0 && errno != EAGAIN) {
        drop(fd);
        continue;
      }
      if (put < 0) put = 0;
      if (put < got) {  // wait until it can take the rest, reading nothing more meanwhile
        pending[fd].assign(buf + put, static_cast<size_t>(got - put));
        epoll_event cev{};
        cev.events = EPOLLOUT;
        cev.data.fd = fd;
        ::epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
      }
    }
  }
}

// ---- clients --------------------------------------------------------------------------------

int connrate(const char* host, int port, double seconds, int workers) {
  const sockaddr_in addr = loopback_address(host, port);
  seconds = std::min(seconds, 60.0);
  workers = std::clamp(workers, 1, 64);
  std::atomic<long> done{0}, failed{0};
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w)
    threads.emplace_back([&] {
      char c = 'x';
      long ok = 0, bad = 0;
      while (Clock::now() < end) {
        const int fd = connect_to(addr);
        if (fd < 0) {
          ++bad;
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          continue;
        }
        set_timeout(fd, 5);
        if (write_all(fd, &c, 1) && read_exact(fd, &c, 1))
          ++ok;
        else
          ++bad;
        ::close(fd);
      }
      done += ok;
      failed += bad;
    });
  for (auto& t : threads) t.join();
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("%.0f %ld\n", static_cast<double>(done) / took, failed.load());
  return 0;
}

double percentile(const std::vector<double>& sorted, double p) {  // nearest rank
  if (sorted.empty()) return 0;
  const auto rank = static_cast<size_t>(std::max(1.0, std::ceil(p / 100.0 * static_cast<double>(sorted.size()))));
  return sorted[std::min(rank, sorted.size()) - 1];
}

int latency(const char* host, int port, int rounds, int bytes) {
  const sockaddr_in addr = loopback_address(host, port);
  rounds = std::clamp(rounds, 100, 1000000);
  bytes = std::clamp(bytes, 1, 65536);
  const int fd = connect_to(addr);
  if (fd < 0) die("connect");
  set_timeout(fd, 5);
  std::vector<char> buf(static_cast<size_t>(bytes), 'p');
  std::vector<double> us;
  us.reserve(static_cast<size_t>(rounds));
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  for (int i = 0; i < rounds + 1000 && Clock::now() < deadline; ++i) {
    const auto t0 = Clock::now();
    if (!write_all(fd, buf.data(), buf.size()) || !read_exact(fd, buf.data(), buf.size())) die("ping-pong");
    const auto t1 = Clock::now();
    if (i >= 1000) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  ::close(fd);
  std::sort(us.begin(), us.end());
  std::printf("%.1f %.1f %.1f %.1f %.1f\n", percentile(us, 50), percentile(us, 90), percentile(us, 99),
              percentile(us, 99.9), us.empty() ? 0.0 : us.back());
  return 0;
}

int idle(const char* host, int port, int count, double hold) {
  raise_fd_limit();
  const sockaddr_in addr = loopback_address(host, port);
  count = std::clamp(count, 1, 9000);
  hold = std::clamp(hold, 1.0, 300.0);
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  ::sigprocmask(SIG_BLOCK, &usr1, nullptr);
  std::vector<int> fds;
  fds.reserve(static_cast<size_t>(count));
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  for (int i = 0; i < count && Clock::now() < deadline; ++i) {
    const int fd = connect_to(addr);
    if (fd < 0) {
      std::fprintf(stderr, "idle: connect %d failed: %s\n", i, std::strerror(errno));
      break;
    }
    set_timeout(fd, 10);
    fds.push_back(fd);
  }
  // One byte each way on every connection: each is spliced end to end, then left idle.
  size_t echoed = 0;
  for (int fd : fds) {
    char c = 'i';
    if (write_all(fd, &c, 1) && read_exact(fd, &c, 1)) ++echoed;
  }
  std::printf("open %zu echoed %zu\n", fds.size(), echoed);
  std::fflush(stdout);
  timespec ts{static_cast<time_t>(hold), 0};
  ::sigtimedwait(&usr1, nullptr, &ts);
  for (int fd : fds) ::close(fd);
  std::printf("closed\n");
  return echoed == static_cast<size_t>(count) ? 0 : 1;
}

int first_byte(const char* host, int port) {
  const sockaddr_in addr = loopback_address(host, port);
  const long long t0 = monotonic_ns();
  const int fd = connect_to(addr);
  if (fd < 0) die("connect");
  set_timeout(fd, 30);
  static constexpr char identification[] = "SSH-2.0-loadgen\r\n";
  if (!write_all(fd, identification, sizeof identification - 1)) die("identification");
  char c = 0;
  if (!read_exact(fd, &c, 1)) die("first byte");
  const long long t1 = monotonic_ns();
  ::close(fd);
  std::printf("%lld %lld\n", t0, t1);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "serve" && argc >= 3) {
    bool banner = false;
    int delay_ms = 0, jitter_ms = 0;
    std::string stamp;
    for (int i = 3; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--banner")
        banner = true;
      else if (a == "--delay-ms" && i + 1 < argc)
        delay_ms = std::atoi(argv[++i]);
      else if (a == "--jitter-ms" && i + 1 < argc)
        jitter_ms = std::atoi(argv[++i]);
      else if (a == "--stamp" && i + 1 < argc)
        stamp = argv[++i];
      else {
        std::fprintf(stderr, "loadgen serve: unknown option %s\n", a.c_str());
        return 2;
      }
    }
    return serve(std::atoi(argv[2]), banner, delay_ms, jitter_ms, stamp);
  }
  if (mode == "connrate" && argc == 6)
    return connrate(argv[2], std::atoi(argv[3]), std::atof(argv[4]), std::atoi(argv[5]));
  if (mode == "latency" && (argc == 5 || argc == 6))
    return latency(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), argc == 6 ? std::atoi(argv[5]) : 64);
  if (mode == "idle" && argc == 6)
    return idle(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), std::atof(argv[5]));
  if (mode == "first-byte" && argc == 4) return first_byte(argv[2], std::atoi(argv[3]));
  std::fprintf(stderr, "usage: see the comment at the top of bench/loadgen.cpp\n");
  return 2;
}
