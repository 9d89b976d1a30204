#include "gateway/jump/jump_session.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "config/duration.hpp"
#include "config/spark_name.hpp"
#include "gateway/backend/unique_fd.hpp"
#include "gateway/tcp_keepalive.hpp"

namespace spark::gateway {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kProgressEvery = 2s;           // a progress line this often while the spark wakes
constexpr auto kPoll = 200ms;                 // how often loops look at the stop flag
constexpr std::size_t kMaxBacklog = 1 << 20;  // client bytes held for a slow upstream
constexpr std::size_t kReadChunk = 64 * 1024;
constexpr auto kLingerAfterRefusal = 2s;  // waiting for the client to close after a refusal

void apply_keepalive(int fd, const config::TcpKeepalive& keepalive, const std::string& what) {
  if (const auto ec = set_tcp_keepalive(fd, keepalive))
    spdlog::warn("jump: cannot set TCP keepalive on {}: {}", what, ec.message());
}

// libssh reports a socket error as "Socket error: <strerror>" and keeps no errno we can read.
bool client_error_is_unreachable(const std::string& error) {
  for (const int code : {ETIMEDOUT, EHOSTUNREACH, ENETUNREACH})
    if (error.find(std::strerror(code)) != std::string::npos) return true;
  return false;
}

}  // namespace

std::optional<std::string> spark_from_login(const std::string& user) {
  const auto name = user.substr(0, user.find('.'));
  if (!config::is_valid_spark_name(name)) return std::nullopt;
  return name;
}

bool channel_reaches(const std::string& spark, const std::string& host, int port, int target_port) {
  const auto first_label = host.substr(0, host.find('.'));
  return first_label == spark && (port == 22 || port == target_port);
}

JumpSession::JumpSession(ProvenLogin login, JumpGateway& gateway, const config::JumpConfig& cfg,
                         const std::atomic<bool>& stopping)
    : session_(login.session),
      auth_(login.auth),
      gateway_(gateway),
      cfg_(cfg),
      stopping_(stopping),
      peer_(std::move(login.peer)),
      spark_(std::move(login.spark)),
      info_(std::move(login.info)),
      key_(std::move(login.key)),
      who_(peer_ + " (jump login " + login.user + ", key " + key_ + ")"),
      target_port_(info_.target_port) {}

JumpSession::~JumpSession() {
  finish();
  if (auth_) ssh_message_free(auth_);
  if (event_) ssh_event_free(event_);
  ssh_disconnect(session_);
  ssh_free(session_);
}

// -- the upstream -----------------------------------------------------------------------------

bool JumpSession::wait_for_upstream() {
  const auto started = Clock::now();
  handoff_ = std::make_shared<UpstreamHandoff>();
  gateway_.connect_upstream(spark_, who_, handoff_);
  auto give_up = [this] {
    if (handoff_->abandon()) gateway_.upstream_ended(handoff_, 0, 0, ConnectionEnd::closed);
    spdlog::info("spark {}: jump login from {} gone while waking", spark_, peer_);
    refused_ = true;
    return false;
  };
  // The admission answers within a turn of the main loop: a refused login never reads "waking".
  while (!handoff_->wait_for_admission(std::chrono::duration_cast<std::chrono::milliseconds>(kPoll)))
    if (stopping_ || client_gone()) return give_up();
  if (handoff_->refused()) {
    refuse("spark-gateway: " + spark_ + " refuses new connections: " + handoff_->error());
    return false;
  }
  const bool asleep = !info_.running;
  if (asleep)
    banner("spark-gateway: waking " + spark_ +
           (!info_.asleep_for.empty() ? " (asleep for " + info_.asleep_for + ")" : "") + "...\n");
  auto next_progress = started + kProgressEvery;
  std::string told_place;  // limits.max_running: where the wake stands in line, said when it moves
  while (!handoff_->wait_for(std::chrono::duration_cast<std::chrono::milliseconds>(kPoll))) {
    if (stopping_ || client_gone()) return give_up();
    if (auto place = handoff_->place(); place != told_place) {
      if (!place.empty()) banner("spark-gateway: " + place + "...\n");
      told_place = std::move(place);
      next_progress = Clock::now() + kProgressEvery;
    } else if (Clock::now() >= next_progress) {
      const auto waited = config::format_duration(Clock::now() - started);
      banner("spark-gateway: " + (told_place.empty() ? spark_ + " still waking" : told_place) + " (" + waited +
             ")...\n");
      next_progress += kProgressEvery;
    }
  }
  upstream_.reset(handoff_->take_fd());
  if (!upstream_) {
    refuse("spark-gateway: cannot wake " + spark_ + ": " + handoff_->error());
    return false;
  }
  upstream_keepalive_ = info_.keepalive ? *info_.keepalive : cfg_.keepalive;
  apply_keepalive(upstream_.get(), upstream_keepalive_, "the upstream of " + spark_);
  if (asleep)
    banner("spark-gateway: " + spark_ + " ready in " + config::format_duration(Clock::now() - started) + "\n");
  return true;
}

// The client hung up (or reset): its socket reads as closed.
bool JumpSession::client_gone() const {
  pollfd p{ssh_get_fd(session_), POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

void JumpSession::banner(const std::string& line) {
  ssh_string text = ssh_string_from_char(line.c_str());
  ssh_send_issue_banner(session_, text);
  ssh_string_free(text);
  ssh_blocking_flush(session_, 1000);
}

// Ends the session with a message OpenSSH prints: as a banner while the client authenticates
// (it prints banners before "Permission denied"), and in the disconnect ("Received disconnect
// from ...: <message>"), which is sent at once.
void JumpSession::refuse(const std::string& message) {
  refused_ = true;
  if (!authenticated_) banner(message + "\n");
  ssh_session_set_disconnect_message(session_, message.c_str());
  // Close only after the client has: OpenSSH reads the disconnect, then acts on it, and a FIN
  // arriving with it could end its loop before it prints the message ("closed by remote host").
  // So keep a duplicate of the socket open past libssh's close, and read until the client
  // closes (bounded); reading also avoids the reset unread bytes would cause.
  const UniqueFd fd(::dup(ssh_get_fd(session_)));
  ssh_blocking_flush(session_, 1000);  // anything queued goes first
  ssh_disconnect(session_);
  if (!fd) return;
  const auto until = Clock::now() + kLingerAfterRefusal;
  char sink[4096];
  for (pollfd p{fd.get(), POLLIN, 0}; Clock::now() < until && ::poll(&p, 1, 100) >= 0;) {
    if (!p.revents) continue;
    const auto n = ::recv(fd.get(), sink, sizeof sink, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
  }
}

// -- channels ---------------------------------------------------------------------------------

int JumpSession::on_message(ssh_session, ssh_message message, void* self) {
  auto* s = static_cast<JumpSession*>(self);
  if (ssh_message_type(message) == SSH_REQUEST_CHANNEL_OPEN) return s->channel_open(message);
  if (ssh_message_type(message) == SSH_REQUEST_CHANNEL && s->shell_channel_ &&
      ssh_message_channel_request_channel(message) == s->shell_channel_)
    return s->shell_request(message);
  return 1;  // libssh's default answer (a failure)
}

// `ssh NAME@gateway` without -J: a session channel, so the explanation can go to the user's
// stderr (a disconnect message is easily lost when the client is busy opening its shell).
int JumpSession::shell_request(ssh_message message) {
  const int type = ssh_message_subtype(message);
  if (type == SSH_CHANNEL_REQUEST_PTY) {
    // Granted (nothing runs on it): `ssh -t` treats a refused terminal as fatal and would exit
    // with only "PTY allocation request failed", never reading the explanation below.
    pty_ = true;
    ssh_message_channel_request_reply_success(message);
    return 0;
  }
  if (type != SSH_CHANNEL_REQUEST_SHELL && type != SSH_CHANNEL_REQUEST_EXEC) return 1;  // env, x11...: refused
  ssh_message_channel_request_reply_success(message);
  const std::string text = "spark-gateway: this is a jump host: no shell or commands here. Use: ssh -J " + spark_ +
                           "@GATEWAY " + spark_ + (pty_ ? "\r\n" : "\n");
  ssh_channel_write_stderr(shell_channel_, text.data(), static_cast<uint32_t>(text.size()));
  ssh_channel_request_send_exit_status(shell_channel_, 1);
  ssh_channel_send_eof(shell_channel_);
  ssh_channel_close(shell_channel_);
  spdlog::info("spark {}: jump login from {} asked for a shell or command: refused", spark_, peer_);
  refused_ = true;
  return 0;
}

int JumpSession::channel_open(ssh_message message) {
  if (ssh_message_subtype(message) == SSH_CHANNEL_SESSION && authenticated_ && !shell_channel_ && !channel_) {
    shell_channel_ = ssh_message_channel_request_open_reply_accept(message);
    return 0;
  }
  if (ssh_message_subtype(message) != SSH_CHANNEL_DIRECT_TCPIP || !authenticated_ || channel_) {
    refuse("spark-gateway: this is a jump host: no shell, commands or other channels (use ssh -J " +
           (spark_.empty() ? std::string("NAME") : spark_) + "@gateway " + (spark_.empty() ? "NAME" : spark_) +
           ")");
    return 0;
  }
  const char* host = ssh_message_channel_request_open_destination(message);
  const int port = ssh_message_channel_request_open_destination_port(message);
  const std::string destination = std::string(host ? host : "") + ":" + std::to_string(port);
  if (!channel_reaches(spark_, host ? host : "", port, target_port_)) {
    spdlog::warn("spark {}: jump login from {} asked for {}: refused", spark_, peer_, destination.substr(0, 300));
    // SSH_MSG_CHANNEL_OPEN_FAILURE, which OpenSSH always prints ("open failed: administratively
    // prohibited"); libssh cannot give it a description, so the explanation follows in the
    // disconnect (printed when the client reads it before it exits on the failure).
    ssh_message_reply_default(message);
    refuse("spark-gateway: this login reaches only " + spark_ + " (port 22 or " + std::to_string(target_port_) +
           "), not " + destination.substr(0, 300));
    return 0;
  }
  channel_ = ssh_message_channel_request_open_reply_accept(message);
  if (!channel_) return 0;
  // Callbacks at once: the client's first bytes (its SSH version line) may come in the very
  // packet batch that follows, before the relay loop starts.
  channel_callbacks_.userdata = this;
  channel_callbacks_.channel_data_function = &JumpSession::on_channel_data;
  channel_callbacks_.channel_eof_function = &JumpSession::on_channel_eof;
  channel_callbacks_.channel_close_function = &JumpSession::on_channel_close;
  ssh_callbacks_init(&channel_callbacks_);
  ssh_set_channel_callbacks(channel_, &channel_callbacks_);
  return 0;
}

// -- the session --------------------------------------------------------------------------------

void JumpSession::run() {
  ssh_set_blocking(session_, 1);  // this thread is the session's alone: plain blocking calls
  const long grace = std::max<long>(1, std::chrono::duration_cast<std::chrono::seconds>(cfg_.login_grace).count());
  ssh_options_set(session_, SSH_OPTIONS_TIMEOUT, &grace);
  if (!wait_for_upstream()) return;
  ssh_message_auth_reply_success(auth_, 0);
  ssh_message_free(auth_);
  auth_ = nullptr;
  authenticated_ = true;
  spdlog::info("spark {}: jump login from {}", spark_, who_);
  ssh_set_message_callback(session_, &JumpSession::on_message, this);
  event_ = ssh_event_new();
  ssh_event_add_session(event_, session_);
  // The channel request, within a login_grace of its own (the wake did not count).
  const auto deadline = Clock::now() + cfg_.login_grace;
  while (!channel_ && !refused_ && !stopping_) {
    if (ssh_event_dopoll(event_, static_cast<int>(std::chrono::milliseconds(kPoll).count())) == SSH_ERROR) break;
    if (Clock::now() > deadline) {
      refuse("spark-gateway: no channel opened within " + config::format_duration(cfg_.login_grace));
      break;
    }
  }
  if (channel_ && !refused_) relay();
  if (shell_channel_) {
    // The explanation must reach the user: OpenSSH exits on our disconnect without writing out
    // what it still holds for its stderr, so let the client hang up first (bounded).
    ssh_blocking_flush(session_, 2000);
    const auto until = Clock::now() + kLingerAfterRefusal;
    while (ssh_is_connected(session_) && !stopping_ && Clock::now() < until)
      if (ssh_event_dopoll(event_, static_cast<int>(std::chrono::milliseconds(kPoll).count())) == SSH_ERROR) break;
  }
}

// -- the relay ----------------------------------------------------------------------------------

int JumpSession::on_channel_data(ssh_session, ssh_channel, void* data, uint32_t len, int, void* self) {
  auto* s = static_cast<JumpSession*>(self);
  s->to_upstream_.append(static_cast<const char*>(data), len);
  s->bytes_up_ += len;
  return static_cast<int>(len);
}

void JumpSession::on_channel_eof(ssh_session, ssh_channel, void* self) {
  static_cast<JumpSession*>(self)->client_eof_ = true;
}

void JumpSession::on_channel_close(ssh_session, ssh_channel, void* self) {
  auto* s = static_cast<JumpSession*>(self);
  s->channel_closed_ = true;
  s->client_eof_ = true;
}

int JumpSession::on_upstream_ready(socket_t fd, int revents, void* self) {
  auto* s = static_cast<JumpSession*>(self);
  if (!(revents & (POLLIN | POLLHUP | POLLERR))) return 0;
  const auto window = ssh_channel_window_size(s->channel_);
  if (window == 0) return 0;  // the client is behind: the main loop pauses reading
  char buf[kReadChunk];
  const auto n = ::read(fd, buf, std::min<std::size_t>(window, sizeof buf));
  if (n > 0) {
    if (ssh_channel_write(s->channel_, buf, static_cast<uint32_t>(n)) == SSH_ERROR) s->channel_closed_ = true;
    s->bytes_down_ += static_cast<std::uint64_t>(n);
  } else if (n == 0) {
    s->upstream_eof_ = true;
  } else if (errno != EAGAIN && errno != EINTR) {
    s->upstream_failed_ = true;
    s->upstream_errno_ = errno;
  }
  return 0;
}

void JumpSession::flush_to_upstream() {
  while (!to_upstream_.empty()) {
    const auto n = ::send(upstream_.get(), to_upstream_.data(), to_upstream_.size(), MSG_NOSIGNAL);
    if (n > 0) {
      to_upstream_.erase(0, static_cast<std::size_t>(n));
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      return;
    } else {
      upstream_failed_ = true;
      upstream_errno_ = n < 0 ? errno : 0;
      return;
    }
  }
}

void JumpSession::relay() {
  const int flags = ::fcntl(upstream_.get(), F_GETFL);
  ::fcntl(upstream_.get(), F_SETFL, flags | O_NONBLOCK);
  const int one = 1;
  ::setsockopt(upstream_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const int poll_ms = static_cast<int>(std::chrono::milliseconds(kPoll).count());
  while (!stopping_ && !upstream_failed_ && !channel_closed_ &&
         !(client_eof_ && upstream_eof_ && to_upstream_.empty())) {
    // Read the upstream only while the client's window has room (and until it ends).
    const bool want_read = !upstream_eof_ && ssh_channel_window_size(channel_) > 0;
    if (want_read != reading_upstream_) {
      if (want_read)
        ssh_event_add_fd(event_, upstream_.get(), POLLIN, &JumpSession::on_upstream_ready, this);
      else
        ssh_event_remove_fd(event_, upstream_.get());
      reading_upstream_ = want_read;
    }
    if (to_upstream_.size() > kMaxBacklog) {
      // The spark reads slowly: stop taking client data (its window closes) until it catches up.
      pollfd p{upstream_.get(), POLLOUT, 0};
      ::poll(&p, 1, poll_ms);
    } else if (ssh_event_dopoll(event_, poll_ms) == SSH_ERROR) {
      break;
    }
    flush_to_upstream();
    if (ssh_channel_is_closed(channel_)) channel_closed_ = true;
    if (ssh_channel_is_eof(channel_)) client_eof_ = true;
    if (client_eof_ && to_upstream_.empty() && !upstream_shut_) {
      ::shutdown(upstream_.get(), SHUT_WR);  // half-close: the spark sees the client's EOF
      upstream_shut_ = true;
    }
    if (upstream_eof_ && !eof_sent_) {
      ssh_channel_send_eof(channel_);
      eof_sent_ = true;
    }
  }
  if (reading_upstream_) ssh_event_remove_fd(event_, upstream_.get());
  reading_upstream_ = false;
  decide_end();
  if (!channel_closed_) ssh_channel_close(channel_);
}

// Why the relay stopped, for the close's log line and its outcome.
void JumpSession::decide_end() {
  const bool spark_unreachable = upstream_failed_ &&
                                 is_peer_unreachable({upstream_errno_, boost::system::system_category()});
  // A dead client's socket error ends libssh's session (nothing else does mid-relay).
  const std::string client_error = ssh_is_connected(session_) ? "" : ssh_get_error(session_);
  if (spark_unreachable || client_error_is_unreachable(client_error)) {
    const bool client = !spark_unreachable;
    end_ = client ? ConnectionEnd::client_unreachable : ConnectionEnd::spark_unreachable;
    const auto& keepalive = client ? cfg_.keepalive : upstream_keepalive_;
    end_text_ = unreachable_words(end_, std::chrono::duration_cast<std::chrono::milliseconds>(keepalive.bound()));
  } else if (upstream_failed_) {
    end_ = ConnectionEnd::error;  // a reset: the log line stays the plain "closed" it always was
  }
}

void JumpSession::finish() {
  if (upstream_) {
    upstream_.reset();
    gateway_.upstream_ended(handoff_, bytes_up_, bytes_down_, end_);
    spdlog::info("spark {}: jump connection from {} {} after {}, {} bytes in, {} bytes out", spark_, peer_,
                 end_text_, config::format_duration(Clock::now() - opened_), bytes_up_, bytes_down_);
  }
  for (auto* c : {&channel_, &shell_channel_}) {
    if (*c) ssh_channel_free(*c);
    *c = nullptr;
  }
}

}  // namespace spark::gateway
