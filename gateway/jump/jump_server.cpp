#include "gateway/jump/jump_server.hpp"

#include <arpa/inet.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "gateway/jump/jump_session.hpp"
#include "gateway/observability/rate_limited_log.hpp"

namespace spark::gateway {
namespace {

// "10.0.0.7", for refusal lines.
std::string client_address(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  char host[INET6_ADDRSTRLEN] = "an unknown address";
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    const void* ip = addr.ss_family == AF_INET6 ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&addr)->sin6_addr)
                                                : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&addr)->sin_addr);
    ::inet_ntop(addr.ss_family == AF_INET6 ? AF_INET6 : AF_INET, ip, host, sizeof host);
  }
  return host;
}

// What OpenSSH's own tool would make; the fix every host key error suggests.
std::string keygen_command(const std::filesystem::path& file) {
  return "ssh-keygen -t ed25519 -N '' -f " + file.string();
}

// The private key in `file`, or nullptr with `why` saying what is wrong with it.
ssh_key import_host_key(const std::filesystem::path& file, std::string& why) {
  struct stat st{};
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

void log_host_key(const std::filesystem::path& file, bool configured) {
  std::string why;
  ssh_key key = import_host_key(file, why);
  if (!key) {
    throw std::runtime_error("jump: cannot use host key " + file.string() + ": " + why + "; " +
                             (configured ? "make one with `" + keygen_command(file) +
                                               "` (in Kubernetes: the Secret, docs/jump-host.md), or fix jump.host_keys"
                                         : "delete it to have a new one generated"));
  }
  spdlog::info("jump: host key {} {}", ssh_key_type_to_char(ssh_key_type(key)), fingerprint(key));
  ssh_key_free(key);
}

// The key in OpenSSH's private key format. Not ssh_pki_export_privkey_base64: it strndup()s a
// buffer that has no terminating NUL, which ASan's strict_string_checks reports. Not
// ssh_pki_export_privkey_file into place: it ignores fclose() failing, which is how a full disk
// left a 0-byte key. libssh writes into a memory file instead, and the text is read back.
std::string export_private_key(ssh_key key) {
  const int fd = ::memfd_create("jump-host-key", MFD_CLOEXEC);
  if (fd < 0) throw std::runtime_error(std::string("memfd_create: ") + std::strerror(errno));
  std::string text;
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (ssh_pki_export_privkey_file(key, nullptr, nullptr, nullptr, path.c_str()) == SSH_OK) {
    char buf[4096];
    for (off_t at = 0;;) {
      const ssize_t n = ::pread(fd, buf, sizeof buf, at);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      text.append(buf, static_cast<std::size_t>(n));
      at += n;
    }
  }
  ::close(fd);
  if (text.empty()) throw std::runtime_error("libssh could not export the key");
  return text;
}

// Writes `text` to `file` so that it is either the old file or the whole new one, never a part:
// a temp file in the same directory (0600 from its creation), fsync, rename, fsync the directory.
void write_file_atomically(const std::filesystem::path& file, const std::string& text) {
  const auto tmp = std::filesystem::path(file.string() + ".tmp");
  auto fail = [&](const std::string& step, int fd) {
    const int e = errno;
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw std::runtime_error(step + " " + tmp.string() + ": " + std::strerror(e));
  };
  ::unlink(tmp.c_str());  // a leftover of an earlier attempt, whatever its mode
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) fail("cannot create", -1);
  for (std::size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = ENOSPC;
      fail("cannot write", fd);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) fail("cannot write", fd);
  if (::close(fd) != 0) fail("cannot write", -1);
  if (::rename(tmp.c_str(), file.c_str()) != 0) fail("cannot rename into place", -1);
  const auto dir = file.has_parent_path() ? file.parent_path() : std::filesystem::path(".");
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);  // the rename itself survives a crash
    ::close(dfd);
  }
}

}  // namespace

void ensure_generated_host_key(const std::filesystem::path& file) {
  std::string why;
  std::error_code ignored;
  const bool exists = std::filesystem::symlink_status(file, ignored).type() != std::filesystem::file_type::not_found &&
                      !ignored;
  if (exists) {
    if (ssh_key key = import_host_key(file, why)) {
      ssh_key_free(key);
      return;
    }
  }
  auto cannot = [&](const std::string& what) {
    return std::runtime_error("jump: " + (exists ? "host key " + file.string() + " is unusable (" + why + ") and " : "") +
                              "cannot write a new host key to " + file.string() + ": " + what +
                              "; free space in (or make writable) " + file.parent_path().string() +
                              ", or set jump.host_keys to a key made with `" + keygen_command(file) + "`");
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
    spdlog::warn("jump: host key {} was unusable ({}): generated a new one in its place; clients that "
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
    : cfg_(std::move(cfg)), access_(JumpAccess::load(cfg_)), gateway_(gateway) {
  ssh_init();
  bind_ = ssh_bind_new();
  const auto host = cfg_.listen.host;
  const auto port = std::to_string(cfg_.listen.port);
  ssh_bind_options_set(bind_, SSH_BIND_OPTIONS_BINDADDR, host.c_str());
  ssh_bind_options_set(bind_, SSH_BIND_OPTIONS_BINDPORT_STR, port.c_str());
  for (const auto& file : host_key_files(cfg_, state_dir)) {
    log_host_key(file, !cfg_.host_keys.empty());
    if (ssh_bind_options_set(bind_, SSH_BIND_OPTIONS_HOSTKEY, file.c_str()) != SSH_OK)
      throw std::runtime_error("jump: host key " + file.string() + ": " + ssh_get_error(bind_));
  }
  if (ssh_bind_listen(bind_) != SSH_OK) {
    const std::string why = ssh_get_error(bind_);
    ssh_bind_free(bind_);
    throw std::runtime_error("jump: cannot listen on " + cfg_.listen.to_string() + ": " + why);
  }
}

JumpServer::~JumpServer() {
  stop();
  if (bind_) ssh_bind_free(bind_);
}

void JumpServer::start() {
  acceptor_ = std::thread([this] { accept_loop(); });
  spdlog::info("jump: listening on {} (public keys only; ssh -J NAME@gateway NAME)", cfg_.listen.to_string());
}

void JumpServer::stop_accepting() { accepting_ = false; }

void JumpServer::stop() {
  accepting_ = false;
  stopping_ = true;
  if (acceptor_.joinable()) acceptor_.join();
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

void JumpServer::accept_loop() {
  pollfd p{ssh_bind_get_fd(bind_), POLLIN, 0};
  while (!stopping_) {
    reap_finished_workers();
    if (::poll(&p, 1, 200) <= 0 || !(p.revents & POLLIN)) continue;
    ssh_session session = ssh_new();
    if (ssh_bind_accept(bind_, session) != SSH_OK) {
      spdlog::warn("jump: accept failed: {}", ssh_get_error(bind_));
      ssh_free(session);
      continue;
    }
    if (!accepting_ || sessions_ >= cfg_.max_sessions) {
      // A line at once, then a count per 10 s: floods are refused by the thousand.
      log_refusal("jump", client_address(ssh_get_fd(session)),
                  accepting_ ? "max_sessions (" + std::to_string(cfg_.max_sessions) + ") reached" : "shutting down");
      ssh_free(session);  // closes the socket
      continue;
    }
    ++sessions_;
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::lock_guard lock(workers_mu_);
    workers_.push_back(Worker{std::thread([this, session, done] {
                                {
                                  JumpSession s(session, access_, gateway_, cfg_, stopping_);
                                  s.run();
                                }
                                --sessions_;
                                *done = true;
                              }),
                              done});
  }
}

}  // namespace spark::gateway
