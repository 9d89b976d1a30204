#pragma once
// One jump-host login once its key is proven, on its own thread to the end of its relay (the
// login itself, key exchange and authentication, ran on the jump host's one login thread:
// PreauthSession):
//   1. the spark the login names is asked for a connection: the gateway's admission (the same
//      caps as the TCP path), then its single-flight wake, with progress lines going to the
//      user's terminal as SSH_MSG_USERAUTH_BANNER until its sshd answers; only then is the
//      login accepted;
//   2. one direct-tcpip channel to that spark is relayed to the upstream connection. The inner
//      SSH session runs end to end inside it: the gateway never sees its keys or contents.
// Anything else gets a refusal that OpenSSH prints, and the session ends.
#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <libssh/server.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "gateway/backend/unique_fd.hpp"
#include "gateway/jump/jump_gateway.hpp"

namespace spark::gateway {

// The spark a jump login names: "brave-dolphin", or "brave-dolphin.spark" (ProxyJump %n with a
// domain-style suffix): the first DNS label. nullopt if that is not a valid spark name.
std::optional<std::string> spark_from_login(const std::string& user);

// Whether a direct-tcpip destination is `spark`'s sshd: host "brave-dolphin" or any name whose
// first label it is ("brave-dolphin.spark", "brave-dolphin.tailnet.ts.net"); port 22 or the
// spark's target port.
bool channel_reaches(const std::string& spark, const std::string& host, int port, int target_port);

// What the login thread hands over once a key's signature is proven for a spark it may open.
struct ProvenLogin {
  ssh_session session = nullptr;  // key exchange done; authentication answered here
  ssh_message auth = nullptr;     // the signed USERAUTH_REQUEST, to be answered
  std::string peer;               // the client's address (from a trusted proxy's PROXY header)
  std::string user;               // the login name as given: "brave-dolphin", "brave-dolphin.alice"
  std::string spark;
  JumpGateway::SparkInfo info;  // as found at the login
  std::string key;              // the key's fingerprint
};

class JumpSession {
 public:
  JumpSession(ProvenLogin login, JumpGateway& gateway, const config::JumpConfig& cfg,
              const std::atomic<bool>& stopping);
  ~JumpSession();
  JumpSession(const JumpSession&) = delete;
  JumpSession& operator=(const JumpSession&) = delete;

  void run();

 private:
  static int on_message(ssh_session, ssh_message message, void* self);
  static int on_channel_data(ssh_session, ssh_channel, void* data, uint32_t len, int is_stderr, void* self);
  static void on_channel_eof(ssh_session, ssh_channel, void* self);
  static void on_channel_close(ssh_session, ssh_channel, void* self);
  static int on_upstream_ready(socket_t fd, int revents, void* self);

  int channel_open(ssh_message message);
  int shell_request(ssh_message message);
  // Asks for the spark's connection (admission, then the wake) and waits for it, telling the
  // user how it goes. False: refused (and said so), or the client left.
  bool wait_for_upstream();
  bool client_gone() const;
  void banner(const std::string& line);
  void refuse(const std::string& message);
  void relay();
  void decide_end();
  void flush_to_upstream();
  void finish();

  ssh_session session_;
  ssh_message auth_;  // answered once the upstream is there
  JumpGateway& gateway_;
  const config::JumpConfig& cfg_;
  const std::atomic<bool>& stopping_;
  std::string peer_;
  ssh_channel_callbacks_struct channel_callbacks_{};
  ssh_event event_ = nullptr;

  std::string spark_;  // named by the login
  JumpGateway::SparkInfo info_;
  std::string key_;
  // Who this is, for the wake Event and the spark's view:
  // "10.0.0.7 (jump login brave-dolphin.alice, key SHA256:...)".
  std::string who_;
  int target_port_ = 22;
  bool pty_ = false;  // a session channel asked for a terminal: lines end in \r\n
  bool refused_ = false;
  bool authenticated_ = false;
  std::shared_ptr<UpstreamHandoff> handoff_;
  UniqueFd upstream_;
  ssh_channel channel_ = nullptr;        // the direct-tcpip channel to the spark
  ssh_channel shell_channel_ = nullptr;  // a session channel, only to explain the refusal
  std::chrono::steady_clock::time_point opened_ = std::chrono::steady_clock::now();

  // The relay.
  std::string to_upstream_;  // client bytes not yet written to the upstream socket
  bool client_eof_ = false;
  bool upstream_eof_ = false;
  bool upstream_shut_ = false;
  bool eof_sent_ = false;
  bool channel_closed_ = false;
  bool upstream_failed_ = false;
  int upstream_errno_ = 0;                     // why upstream_failed_
  config::TcpKeepalive upstream_keepalive_;    // as set on the upstream socket
  ConnectionEnd end_ = ConnectionEnd::closed;  // decided when the relay stops
  std::string end_text_ = "closed";            // ... and its words for the log
  bool reading_upstream_ = false;              // the upstream fd is in the event (not paused by the window)
  std::uint64_t bytes_up_ = 0;
  std::uint64_t bytes_down_ = 0;
};

}  // namespace spark::gateway
