#include "gateway/jump/jump_login.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "gateway/observability/rate_limited_log.hpp"
#include "gateway/tcp_keepalive.hpp"

// libssh 0.10 marks the ssh_message accessors deprecated in favour of its server callbacks, but a
// callback must answer an authentication request before it returns, and a login here must not
// wait for the main loop on this one thread of logins: the request is kept (ssh_message_get)
// and answered once the spark is found. The accessors remain in libssh's ABI.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace spark::gateway {
namespace {

// OpenSSH's MaxAuthTries is 6; a client with many keys in its agent gets a little more room.
constexpr int kMaxAuthFailures = 10;

// The per-attempt refusals ("no such spark", "key not authorized"): a line at once per name or
// key, then one count per 10 s, so a flood of failed logins cannot flood the log.
RateLimitedLog& login_refusal_log() {
  static RateLimitedLog log("refused", "login", kRefusalLogInterval);
  return log;
}

}  // namespace

JumpLogin::JumpLogin(const Shared& shared, tcp::socket socket, std::string peer, Ended ended)
    : shared_(shared),
      socket_(std::move(socket)),
      grace_(shared.io),
      peer_(std::move(peer)),
      ended_(std::move(ended)) {}

JumpLogin::~JumpLogin() {
  if (waiting_) ssh_message_free(waiting_);
  if (session_) ssh_free(session_);
}

void JumpLogin::start() {
  // libssh gets a descriptor of its own (closed by ssh_free); Asio watches the original.
  // Failures here are the gateway's (no descriptor, no memory, a bad libssh_server.config): the
  // connection is closed without penalty, and logged as refusals are (no line per connection).
  const int fd = ::fcntl(socket_.native_handle(), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    log_refusal("jump", peer_, std::string("cannot start a session: ") + std::strerror(errno));
    return finish(StartupGate::End::dropped);
  }
  session_ = ssh_new();
  if (!session_ || ssh_bind_accept_fd(shared_.bind, session_, fd) != SSH_OK) {
    log_refusal("jump", peer_, std::string("cannot start a session: ") + ssh_get_error(shared_.bind));
    if (!session_ || ssh_get_fd(session_) != fd) ::close(fd);  // libssh did not take it
    return finish(StartupGate::End::dropped);
  }
  ssh_set_blocking(session_, 0);
  ssh_set_auth_methods(session_, SSH_AUTH_METHOD_PUBLICKEY);
  // From the first byte: a client that vanishes is found like one mid-session.
  if (const auto ec = set_tcp_keepalive(fd, shared_.cfg.keepalive))
    spdlog::debug("jump: cannot set TCP keepalive on the connection from {}: {}", peer_, ec.message());
  grace_.expires_after(shared_.cfg.login_grace);
  grace_.async_wait([self = shared_from_this()](error_code ec) {
    if (!ec && !self->finished_) self->finish(StartupGate::End::grace_exceeded);
  });
  step();
}

void JumpLogin::close(StartupGate::End how) { finish(how); }

void JumpLogin::step() {
  if (finished_) return;
  if (!kex_done_) {
    const int rc = ssh_handle_key_exchange(session_);
    if (rc == SSH_ERROR) return finish(StartupGate::End::noauth);
    kex_done_ = rc == SSH_OK;
  }
  while (kex_done_ && !waiting_ && !finished_) {
    ssh_message message = ssh_message_get(session_);  // non-blocking: nullptr when none is complete
    if (!message) break;
    handle(message);
  }
  if (finished_) return;
  ssh_blocking_flush(session_, 0);  // what the answers queued goes out now, as far as it can
  if (ssh_get_status(session_) & (SSH_CLOSED | SSH_CLOSED_ERROR))
    return finish(tried_ ? StartupGate::End::authfail : StartupGate::End::noauth);
  watch_socket();
}

void JumpLogin::watch_socket() {
  // Readable: more of the client's packets (not while a lookup holds a request: they wait in
  // the socket). Writable: libssh holds output, or wants to know it may write.
  if (!reading_ && !waiting_) {
    reading_ = true;
    socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](error_code ec) {
      self->reading_ = false;
      if (!ec) self->step();
    });
  }
  if (!writing_ && (ssh_get_poll_flags(session_) & SSH_WRITE_PENDING)) {
    writing_ = true;
    socket_.async_wait(tcp::socket::wait_write, [self = shared_from_this()](error_code ec) {
      self->writing_ = false;
      if (!ec) self->step();
    });
  }
}

void JumpLogin::handle(ssh_message message) {
  if (ssh_message_type(message) == SSH_REQUEST_AUTH && ssh_message_subtype(message) == SSH_AUTH_METHOD_PUBLICKEY)
    return publickey(message);
  if (ssh_message_type(message) == SSH_REQUEST_AUTH && ssh_message_subtype(message) != SSH_AUTH_METHOD_NONE)
    return fail(message);  // methods it was not offered
  // "none" (the list of methods), the ssh-userauth service: libssh's default answers. Anything
  // else before authentication (channels, global requests) is refused by them too.
  ssh_message_reply_default(message);
  ssh_message_free(message);
}

void JumpLogin::publickey(ssh_message message) {
  tried_ = true;
  const char* user = ssh_message_auth_user(message);
  const std::string name = user ? user : "";
  if (user_ == name) return decide(message);
  // A new user name (clients keep theirs, so once per login): ask the main loop, without
  // waiting for it; the request waits, and so does everything the client sends after it.
  user_ = name;
  info_.reset();
  const auto spark = spark_from_login(name);
  if (!spark) return decide(message);
  spark_ = *spark;
  waiting_ = message;
  shared_.gateway.find_spark_async(*spark, [self = shared_from_this()](
                                               std::optional<JumpGateway::SparkInfo> info) {
    asio::post(self->shared_.io, [self, info = std::move(info)]() mutable { self->spark_found(std::move(info)); });
  });
}

void JumpLogin::spark_found(std::optional<JumpGateway::SparkInfo> info) {
  if (finished_ || !waiting_) return;
  info_ = std::move(info);
  ssh_message message = waiting_;
  waiting_ = nullptr;
  decide(message);
  step();  // the requests that came meanwhile
}

void JumpLogin::decide(ssh_message message) {
  const std::string user = user_ ? user_->substr(0, 64) : "";
  if (!info_) {
    if (!name_told_) {
      name_told_ = true;
      login_refusal_log().record("jump: no spark named \"" + user + "\"",
                                 "jump: login from " + peer_ + " as \"" + user + "\": no such spark",
                                 "last from " + peer_);
      banner("spark-gateway: no spark named \"" + user +
             "\" (log in as the spark's name: ssh -J NAME@gateway NAME)\n");
    }
    return fail(message);
  }
  ssh_key key = ssh_message_auth_pubkey(message);
  if (!key || !shared_.access.allows(key, spark_)) {
    if (!key_told_ && key) {
      key_told_ = true;
      const auto print = fingerprint(key);
      login_refusal_log().record("jump: key " + print + " not authorized for " + spark_,
                                 "jump: login from " + peer_ + " to " + spark_ + ": key " + print +
                                     " is not authorized for it",
                                 "last from " + peer_);
      banner("spark-gateway: key " + print + " may not open " + spark_ + "\n");
    }
    return fail(message);
  }
  const auto state = ssh_message_auth_publickey_state(message);
  if (state == SSH_PUBLICKEY_STATE_NONE) {  // a key query: yes, this key would do
    ssh_message_auth_reply_pk_ok_simple(message);
    ssh_message_free(message);
    return;
  }
  if (state != SSH_PUBLICKEY_STATE_VALID) return fail(message);
  finish(StartupGate::End::logged_in, message);  // proven: the wake starts on its own thread
}

void JumpLogin::fail(ssh_message message) {
  ssh_message_reply_default(message);  // USERAUTH_FAILURE, "publickey"
  ssh_message_free(message);
  if (++failures_ < kMaxAuthFailures) return;
  banner("spark-gateway: too many failed logins on one connection\n");
  ssh_blocking_flush(session_, 0);
  finish(StartupGate::End::authfail);
}

// SSH_MSG_USERAUTH_BANNER: OpenSSH prints it on stderr at its default log level.
void JumpLogin::banner(const std::string& line) {
  ssh_string text = ssh_string_from_char(line.c_str());
  ssh_send_issue_banner(session_, text);
  ssh_string_free(text);
}

void JumpLogin::finish(StartupGate::End how, ssh_message proven) {
  if (finished_) return;
  finished_ = true;
  grace_.cancel();
  error_code ignored;
  socket_.close(ignored);  // Asio's duplicate; the connection stays open while libssh has it
  if (waiting_) {
    ssh_message_free(waiting_);
    waiting_ = nullptr;
  }
  std::optional<ProvenLogin> login;
  if (proven) {
    const std::string user = user_.value_or("").substr(0, 64);
    login =
        ProvenLogin{session_, proven, peer_, user, spark_, *info_, fingerprint(ssh_message_auth_pubkey(proven))};
    session_ = nullptr;  // the session's thread owns it now
  } else if (session_) {
    ssh_free(session_);  // closes the connection
    session_ = nullptr;
  }
  auto ended = std::move(ended_);
  ended(*this, how, std::move(login));
}

}  // namespace spark::gateway
