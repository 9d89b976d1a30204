#include "gateway/jump/jump_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "config/duration.hpp"
#include "gateway/backend/unique_fd.hpp"
#include "gateway/client_greeting.hpp"
#include "gateway/jump/jump_session.hpp"
#include "gateway/observability/rate_limited_log.hpp"
#include "gateway/proxy_protocol.hpp"

namespace spark::gateway {
namespace {

using namespace std::chrono_literals;

// How long accept waits after running out of descriptors (or memory), as the TCP listeners do.
constexpr auto kAcceptBackoff = 100ms;
// Connections taken per readiness wake-up before the logins get a turn.
constexpr int kAcceptBurst = 64;
constexpr auto kReapEvery = 5s;

// "10.0.0.7" (an IPv4-mapped IPv6 address as IPv4), for the gate and the log.
std::string address_text(const sockaddr_storage& addr) {
  char host[INET6_ADDRSTRLEN] = "an unknown address";
  if (addr.ss_family == AF_INET6) {
    const auto& a6 = reinterpret_cast<const sockaddr_in6&>(addr).sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
      ::inet_ntop(AF_INET, &a6.s6_addr[12], host, sizeof host);
    } else {
      ::inet_ntop(AF_INET6, &a6, host, sizeof host);
    }
  } else if (addr.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(addr).sin_addr, host, sizeof host);
  }
  return host;
}

// The same for an address named in a PROXY header.
std::string address_text(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).to_string();
  return address.to_string();
}

// Sources whose penalty became active: a line at once, then a count per 10 s.
RateLimitedLog& penalty_log() {
  static RateLimitedLog log("penalized", "source", kRefusalLogInterval);
  return log;
}

// What OpenSSH's own tool would make; the fix every host key error suggests.
std::string keygen_command(const std::filesystem::path& file) {
  return "ssh-keygen -t ed25519 -N '' -f " + file.string();
}

// The private key in `file`, or nullptr with `why` saying what is wrong with it.
ssh_key import_host_key(const std::filesystem::path& file, std::string& why) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) {
    why = std::strerror(errno);
    return nullptr;
  }
  if (S_ISREG(st.st_mode) && st.st_size == 0) {
    why = "it is empty: 0 bytes, as a write cut short by a full disk leaves it";
    return nullptr;
  }
  if (::access(file.c_str(), R_OK) != 0) {
    why = std::string("cannot read it: ") + std::strerror(errno);
    return nullptr;
  }
  ssh_key key = nullptr;
  if (ssh_pki_import_privkey_file(file.c_str(), nullptr, nullptr, nullptr, &key) != SSH_OK) {
    why = "it is not an unencrypted private key in a format libssh reads";
    return nullptr;
  }
  return key;
}

// The host key in `file`, its fingerprint logged; throws with the fix if it cannot be used.
ssh_key load_host_key(const std::filesystem::path& file, bool configured) {
  std::string why;
  ssh_key key = import_host_key(file, why);
  if (!key) {
    throw std::runtime_error("jump: cannot use host key " + file.string() + ": " + why + "; " +
                             (configured
                                  ? "make one with `" + keygen_command(file) +
                                        "` (in Kubernetes: the Secret, docs/jump-host.md), or fix jump.host_keys"
                                  : "delete it to have a new one generated"));
  }
  spdlog::info("jump: host key {} {}", ssh_key_type_to_char(ssh_key_type(key)), fingerprint(key));
  return key;
}

// The key in OpenSSH's private key format. Not ssh_pki_export_privkey_base64: it strndup()s a
// buffer that has no terminating NUL, which ASan's strict_string_checks reports. Not
// ssh_pki_export_privkey_file into place: it ignores fclose() failing, which is how a full disk
// left a 0-byte key. libssh writes into a memory file instead, and the text is read back.
std::string export_private_key(ssh_key key) {
  UniqueFd fd(::memfd_create("jump-host-key", MFD_CLOEXEC));
  if (!fd) throw std::runtime_error(std::string("memfd_create: ") + std::strerror(errno));
  std::string text;
  const std::string path = "/proc/self/fd/" + std::to_string(fd.get());
  if (ssh_pki_export_privkey_file(key, nullptr, nullptr, nullptr, path.c_str()) == SSH_OK) {
    char buf[4096];
    for (off_t at = 0;;) {
      const ssize_t n = ::pread(fd.get(), buf, sizeof buf, at);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      text.append(buf, static_cast<std::size_t>(n));
      at += n;
    }
  }
  fd.reset();
  if (text.empty()) throw std::runtime_error("libssh could not export the key");
  return text;
}

// Writes `text` to `file` so that it is either the old file or the whole new one, never a part:
// a temp file in the same directory (0600 from its creation), fsync, rename, fsync the directory.
void write_file_atomically(const std::filesystem::path& file, const std::string& text) {
  const auto tmp = std::filesystem::path(file.string() + ".tmp");
  UniqueFd fd;
  auto fail = [&](const std::string& step) {
    const int e = errno;
    fd.reset();
    ::unlink(tmp.c_str());
    throw std::runtime_error(step + " " + tmp.string() + ": " + std::strerror(e));
  };
  ::unlink(tmp.c_str());  // a leftover of an earlier attempt, whatever its mode
  fd.reset(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) fail("cannot create");
  for (std::size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = ENOSPC;
      fail("cannot write");
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd.get()) != 0) fail("cannot write");
  if (fd.close() != 0) fail("cannot write");
  if (::rename(tmp.c_str(), file.c_str()) != 0) fail("cannot rename into place");
  const auto dir = file.has_parent_path() ? file.parent_path() : std::filesystem::path(".");
  if (const UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)); dfd) {
    ::fsync(dfd.get());  // the rename itself survives a crash
  }
}

}  // namespace

void ensure_generated_host_key(const std::filesystem::path& file) {
  std::string why;
  std::error_code ignored;
  const bool exists = std::filesystem::symlink_status(file, ignored).type() !=
                          std::filesystem::file_type::not_found &&
                      !ignored;
  if (exists) {
    if (ssh_key key = import_host_key(file, why)) {
      ssh_key_free(key);
      return;
    }
  }
  auto cannot = [&](const std::string& what) {
    return std::runtime_error(
        "jump: " + (exists ? "host key " + file.string() + " is unusable (" + why + ") and " : "") +
        "cannot write a new host key to " + file.string() + ": " + what + "; free space in (or make writable) " +
        file.parent_path().string() + ", or set jump.host_keys to a key made with `" + keygen_command(file) + "`");
  };
  ssh_key key = nullptr;
  try {
    std::error_code ec;
    std::filesystem::create_directories(file.parent_path(), ec);
    if (ec) throw cannot("cannot create the directory: " + ec.message());
    if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &key) != SSH_OK) throw cannot("generating an ed25519 key failed");
    try {
      write_file_atomically(file, export_private_key(key));
    } catch (const std::runtime_error& e) {
      throw cannot(e.what());
    }
  } catch (...) {
    ssh_key_free(key);
    throw;
  }
  if (exists) {
    spdlog::warn(
        "jump: host key {} was unusable ({}): generated a new one in its place; clients that "
        "knew the old key will see a host key change (its fingerprint follows)",
        file.string(), why);
  } else {
    spdlog::info("jump: generated host key {}", file.string());
  }
  ssh_key_free(key);
}

std::vector<std::filesystem::path> JumpServer::host_key_files(const config::JumpConfig& cfg,
                                                              const std::filesystem::path& state_dir) {
  if (!cfg.host_keys.empty()) return cfg.host_keys;
  const auto generated = state_dir / "jump_host_ed25519_key";
  ensure_generated_host_key(generated);
  return {generated};
}

JumpServer::JumpServer(config::JumpConfig cfg, const std::filesystem::path& state_dir, JumpGateway& gateway)
    : cfg_(std::move(cfg)),
      access_(JumpAccess::load(cfg_)),
      gateway_(gateway),
      gate_(cfg_.max_startups, cfg_.penalties, cfg_.max_sessions),
      shared_{io_, nullptr, access_, gateway_, cfg_} {
  ssh_init();
  bind_ = ssh_bind_new();
  shared_.bind = bind_;
  try {
    // The keys go into the bind now (its sessions copy them), so a bad one stops the start.
    for (const auto& file : host_key_files(cfg_, state_dir)) {
      ssh_key key = load_host_key(file, !cfg_.host_keys.empty());
      if (ssh_bind_options_set(bind_, SSH_BIND_OPTIONS_IMPORT_KEY, key) != SSH_OK) {
        ssh_key_free(key);
        throw std::runtime_error("jump: host key " + file.string() + ": " + ssh_get_error(bind_));
      }
    }
    // The listener is the gateway's own, as the TCP listeners' are (libssh's listens with a
    // backlog of 10, and bursts lost their SYNs); accepted sockets go to libssh by descriptor.
    auto fail = [this](const std::string& why) {
      return std::runtime_error("jump: cannot listen on " + cfg_.listen.to_string() + ": " + why);
    };
    error_code ec;
    const auto address = asio::ip::make_address(cfg_.listen.host, ec);
    if (ec) throw fail(ec.message());
    const tcp::endpoint endpoint(address, static_cast<unsigned short>(cfg_.listen.port));
    // Close-on-exec from the start: a child the gateway starts must not inherit the port.
    const int fd = ::socket(endpoint.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_TCP);
    if (fd < 0) throw fail(std::strerror(errno));
    acceptor_.assign(endpoint.protocol(), fd, ec);
    if (ec) {
      ::close(fd);
      throw fail(ec.message());
    }
    acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw fail(ec.message());
  } catch (...) {
    ssh_bind_free(bind_);
    bind_ = nullptr;
    throw;
  }
}

JumpServer::~JumpServer() {
  stop();
  if (bind_) ssh_bind_free(bind_);
}

void JumpServer::start() {
  asio::co_spawn(io_, accept_loop(), asio::detached);
  asio::co_spawn(io_, reap_loop(), asio::detached);
  login_thread_ = std::thread([this] {
    ::pthread_setname_np(::pthread_self(), "jump-logins");
    io_.run();
  });
  spdlog::info("jump: listening on {} (public keys only; ssh -J NAME@gateway NAME)", cfg_.listen.to_string());
}

void JumpServer::close_logins() {
  auto logins = logins_;  // each close() removes itself from logins_
  for (auto& login : logins) login->close(StartupGate::End::dropped);
  for (auto& reader : reading_headers_) {
    error_code ignored;
    reader.socket->close(ignored);  // its reader wakes, sees the socket closed, and ends
  }
  reading_headers_.clear();
}

void JumpServer::stop_accepting() {
  asio::post(io_, [this] {
    error_code ignored;
    acceptor_.close(ignored);
    close_logins();
  });
}

void JumpServer::stop() {
  stopping_ = true;
  if (login_thread_.joinable()) {
    asio::post(io_, [this] {
      error_code ignored;
      acceptor_.close(ignored);
      close_logins();
      io_.stop();
    });
    login_thread_.join();
  } else {
    error_code ignored;
    acceptor_.close(ignored);
    close_logins();
  }
  std::lock_guard lock(workers_mu_);
  for (auto& w : workers_)
    if (w.thread.joinable()) w.thread.join();
  workers_.clear();
}

void JumpServer::reap_finished_workers() {
  std::lock_guard lock(workers_mu_);
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (*it->done) {
      it->thread.join();
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
}

awaitable<void> JumpServer::reap_loop() {
  asio::steady_timer timer(io_);
  while (!stopping_) {
    timer.expires_after(kReapEvery);
    error_code ec;
    co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
    if (ec) co_return;
    reap_finished_workers();
  }
}

awaitable<void> JumpServer::accept_loop() {
  asio::steady_timer backoff(io_);
  std::optional<std::chrono::steady_clock::time_point> failing_since;
  while (acceptor_.is_open()) {
    error_code ec;
    co_await acceptor_.async_wait(tcp::acceptor::wait_read, asio::redirect_error(use_awaitable, ec));
    if (ec || !acceptor_.is_open()) co_return;
    for (int i = 0; i < kAcceptBurst && acceptor_.is_open(); ++i) {
      sockaddr_storage addr{};
      socklen_t len = sizeof addr;
      // accept4: close-on-exec from its first moment (Asio's accept is not), non-blocking for libssh.
      const int fd = ::accept4(acceptor_.native_handle(), reinterpret_cast<sockaddr*>(&addr), &len,
                               SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) {
        if (failing_since) {
          spdlog::info("jump: accepting connections again (accept failed for {})",
                       config::format_duration(std::chrono::steady_clock::now() - *failing_since));
          failing_since.reset();
        }
        accepted(fd, addr);
        continue;
      }
      const int err = errno;
      if (err == EINTR || err == ECONNABORTED) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      // Out of descriptors or memory: the listener stays readable, so pause instead of spinning,
      // and say so once, not at every try.
      if (!failing_since) {
        spdlog::warn("jump: accept failed: {}; retrying every {} ms", std::strerror(err), kAcceptBackoff.count());
        failing_since = std::chrono::steady_clock::now();
      }
      backoff.expires_after(kAcceptBackoff);
      co_await backoff.async_wait(asio::redirect_error(use_awaitable, ec));
      break;
    }
  }
}

void JumpServer::accepted(int fd, const sockaddr_storage& addr) {
  tcp::socket socket(io_);
  error_code ec;
  socket.assign(addr.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), fd, ec);
  if (ec) {
    ::close(fd);
    return;
  }
  const std::string peer = address_text(addr);
  const auto remote = socket.remote_endpoint(ec);
  const bool trusted = !ec && is_trusted_proxy(cfg_.trusted_proxies, remote.address());
  if (cfg_.proxy_protocol == config::ProxyProtocol::off ||
      (!trusted && cfg_.proxy_protocol == config::ProxyProtocol::optional))
    return admit(std::move(socket), peer);
  if (!trusted) {
    log_refusal("jump", peer, "not in trusted_proxies, and a PROXY header is required");
    return;
  }
  // From a trusted proxy: the client is named in its header, and the gate weighs the client, not
  // the proxy that all of them come through. Headers arrive at once; at most max_startups'
  // `full` connections may still be sending one, shared fairly among the proxies.
  if (!make_room_for_header(peer)) return;
  asio::co_spawn(io_, admit_after_proxy_header(std::move(socket), peer), asio::detached);
}

bool JumpServer::make_room_for_header(const std::string& proxy) {
  if (std::cmp_less(reading_headers_.size(), cfg_.max_startups.full)) return true;
  // As StartupGate does for logins: a proxy holding fewer than the one holding the most takes
  // that one's oldest slot, so one trusted address (a pod in a trusted pod network) flooding
  // silent connections only ever displaces its own.
  std::map<std::string, int> held;
  for (const auto& reader : reading_headers_) ++held[reader.proxy];
  const auto heaviest = std::max_element(held.begin(), held.end(),
                                         [](const auto& a, const auto& b) { return a.second < b.second; });
  if (heaviest->first == proxy || heaviest->second < held[proxy] + 2) {
    log_refusal("jump", proxy,
                "max_startups " + std::to_string(cfg_.max_startups.full) +
                    " connections from proxies are still sending their PROXY header");
    return false;
  }
  const auto oldest = std::find_if(reading_headers_.begin(), reading_headers_.end(),
                                   [&](const auto& reader) { return reader.proxy == heaviest->first; });
  log_refusal("jump", oldest->proxy,
              "closed a connection still sending its PROXY header to make room for " + proxy);
  error_code ignored;
  oldest->socket->close(ignored);  // its reader wakes and ends
  reading_headers_.erase(oldest);
  return true;
}

awaitable<void> JumpServer::admit_after_proxy_header(tcp::socket socket, std::string proxy) {
  GreetingRules rules;
  rules.proxy = cfg_.proxy_protocol;
  rules.proxy_trusted = true;
  rules.wait_for_data = false;
  rules.header_timeout = std::min<std::chrono::milliseconds>(rules.header_timeout, cfg_.login_grace);
  const auto reader = reading_headers_.insert(reading_headers_.end(), HeaderReader{proxy, &socket});
  const Greeting greeting = co_await read_proxy_header_alone(socket, rules);
  // Still listed unless make_room_for_header() or close_logins() closed it (and took it out).
  if (socket.is_open()) reading_headers_.erase(reader);
  if (stopping_ || !acceptor_.is_open() || !socket.is_open()) co_return;
  if (greeting.turned_away && *greeting.turned_away != TurnedAway::proxy_local) {
    log_refusal("jump", proxy, greeting.reason);
    co_return;
  }
  // LOCAL (the proxy's health check) and UNKNOWN name no client: the proxy's own connection,
  // which may go on (a check may wait for the SSH banner; nothing wakes before a login). A
  // health check that never logs in is no failed login: it costs the proxy no penalty.
  const bool health_check = greeting.turned_away.has_value();
  const std::string client = greeting.client ? address_text(greeting.client->address()) : proxy;
  if (greeting.client) spdlog::debug("jump: a connection from {} through the proxy at {}", client, proxy);
  admit(std::move(socket), client, health_check);
}

void JumpServer::admit(tcp::socket socket, const std::string& peer, bool health_check) {
  const auto now = StartupGate::Clock::now();
  const auto decision = gate_.decide(peer, sessions_, now);
  if (decision.kind == StartupGate::Decision::Kind::refuse) {
    log_refusal("jump", peer, decision.why);  // a line at once, then a count per 10 s
    return;
  }
  if (decision.kind == StartupGate::Decision::Kind::admit_after_eviction) {
    const auto oldest = std::find_if(logins_.begin(), logins_.end(),
                                     [&](const auto& login) { return login->peer() == decision.evict; });
    if (oldest != logins_.end()) {  // the oldest: logins_ is in arrival order
      log_refusal("jump", decision.evict,
                  "closed a connection not logged in yet to make room for " + peer + " (" + decision.evict +
                      " holds the most: " + std::to_string(gate_.unauthenticated_from(decision.evict)) + ")");
      const auto victim = *oldest;  // close() takes it out of logins_
      victim->close(StartupGate::End::evicted);
    }
  }
  gate_.started(peer);
  auto ended = [this, health_check](JumpLogin& l, StartupGate::End how, std::optional<ProvenLogin> proven) {
    if (health_check && how != StartupGate::End::logged_in) how = StartupGate::End::dropped;
    login_ended(l, how, std::move(proven));
  };
  auto login = std::make_shared<JumpLogin>(shared_, std::move(socket), peer, std::move(ended));
  logins_.push_back(login);
  login->start();
}

void JumpServer::login_ended(JumpLogin& login, StartupGate::End how, std::optional<ProvenLogin> proven) {
  const auto keep = login.shared_from_this();  // logins_ may have held the last reference
  logins_.remove_if([&login](const auto& l) { return l.get() == &login; });
  const auto now = StartupGate::Clock::now();
  if (gate_.ended(login.peer(), how, now)) {
    const auto left = gate_.penalty_left(login.peer(), now).value_or(StartupGate::Clock::duration{});
    const auto why = "refusing its connections for " +
                     config::format_duration(std::chrono::round<std::chrono::seconds>(left)) +
                     ": they keep failing to log in (the last one " + std::string(to_string(how)) +
                     "; jump.per_source_penalties)";
    penalty_log().record("jump", "jump: penalizing " + login.peer() + ": " + why,
                         "last " + login.peer() + ": " + why);
  }
  if (proven) start_session(std::move(*proven));
}

void JumpServer::start_session(ProvenLogin login) {
  reap_finished_workers();
  ++sessions_;
  auto done = std::make_shared<std::atomic<bool>>(false);
  auto session = std::make_shared<ProvenLogin>(std::move(login));
  std::lock_guard lock(workers_mu_);
  try {
    workers_.push_back(Worker{std::thread([this, session, done] {
                                {
                                  JumpSession s(std::move(*session), gateway_, cfg_, stopping_);
                                  s.run();
                                }
                                --sessions_;
                                *done = true;
                              }),
                              done});
  } catch (const std::system_error& e) {
    spdlog::error("jump: cannot start a thread for the session of {} ({}): {}", session->peer, session->spark,
                  e.what());
    ssh_message_free(session->auth);
    ssh_free(session->session);
    --sessions_;
  }
}

}  // namespace spark::gateway
