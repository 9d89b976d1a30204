#include "gateway/jump/jump_server.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <stdexcept>

#include "gateway/jump/jump_session.hpp"

namespace spark::gateway {
namespace {

void log_host_key(const std::filesystem::path& file) {
  ssh_key key = nullptr;
  if (ssh_pki_import_privkey_file(file.c_str(), nullptr, nullptr, nullptr, &key) != SSH_OK)
    throw std::runtime_error("jump: cannot read host key " + file.string());
  spdlog::info("jump: host key {} {}", ssh_key_type_to_char(ssh_key_type(key)), fingerprint(key));
  ssh_key_free(key);
}

}  // namespace

std::vector<std::filesystem::path> JumpServer::host_key_files(const config::JumpConfig& cfg,
                                                              const std::filesystem::path& state_dir) {
  if (!cfg.host_keys.empty()) return cfg.host_keys;
  const auto generated = state_dir / "jump_host_ed25519_key";
  if (!std::filesystem::exists(generated)) {
    std::filesystem::create_directories(state_dir);
    ssh_key key = nullptr;
    if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &key) != SSH_OK)
      throw std::runtime_error("jump: cannot generate an ed25519 host key");
    const auto old_mask = ::umask(077);  // the private key is 0600 from its first byte
    const int rc = ssh_pki_export_privkey_file(key, nullptr, nullptr, nullptr, generated.c_str());
    ::umask(old_mask);
    ssh_key_free(key);
    if (rc != SSH_OK) throw std::runtime_error("jump: cannot write a host key to " + generated.string());
    spdlog::info("jump: generated host key {}", generated.string());
  }
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
    log_host_key(file);
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
      spdlog::warn("jump: refusing a login: {}", accepting_ ? "max_sessions (" + std::to_string(cfg_.max_sessions) + ") reached" : "shutting down");
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
