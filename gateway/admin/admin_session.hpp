#pragma once
// One admin connection (docs/admin-server.md). For each request: read the header under the
// whole-request deadline; let the router admit or refuse it before any body byte is read; read
// the body within the body limit (whatever its framing); have the call served (on the admin
// loop for the probes, on a pool for GatewayControl calls) and write the answer. Keep-alive
// until the client closes, errs or runs out of time.
#include <chrono>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "gateway/admin/admin_router.hpp"
#include "gateway/asio.hpp"

namespace spark::gateway {

// What every session shares; owned by the AdminServer, which outlives them.
struct AdminSessionContext {
  const AdminRouter& router;
  asio::thread_pool& quick_calls;  // GatewayControl calls that return within seconds
  asio::thread_pool& long_calls;   // wake?wait=true and sleep: until the wake or sleep is done
  std::chrono::milliseconds request_timeout;
};

class AdminSession {
 public:
  enum class Phase { reading, serving, writing };

  // `probes_only`: admitted over admin.max_connections into a slot kept for /healthz and
  // /readyz; any other request is answered 503.
  AdminSession(tcp::socket socket, const AdminSessionContext& context, bool probes_only);

  // Serves requests until the client closes, errs, runs out of time or close() is called.
  awaitable<void> run();
  // Closes the connection now; run() then ends.
  void close();

  // Not inside a GatewayControl call, so closing it to make room loses nobody's operation.
  bool evictable() const { return phase_ != Phase::serving && !closed_; }
  std::chrono::steady_clock::time_point phase_since() const { return phase_since_; }
  bool probes_only() const { return probes_only_; }

 private:
  using Parser = boost::beast::http::request_parser<boost::beast::http::string_body>;
  // What comes after a step of a request: the next step (or request), the end of the
  // connection (its sending side shut down first), or nothing (it is closed already).
  enum class Next { go_on, finish, closed };

  // One request, from its first header byte to its answer.
  awaitable<Next> handle_request();
  // The header; one that cannot be read is answered (if it deserves an answer) and closed.
  awaitable<Next> read_header(Parser& parser);
  // The router's admission, and this session's own refusals (two Host headers; over
  // admin.max_connections, anything but a probe).
  Admission admit(const Parser& parser) const;
  // Answers a refused request; the connection goes on only if its body was never sent.
  awaitable<Next> refuse(const ApiResponse& refusal, const Parser& parser);
  // The body, within the body limit (whatever its framing), after a 100 Continue if asked for.
  awaitable<Next> read_body(Parser& parser);
  awaitable<ApiResponse> serve(const AdminCall& call, const std::string& body);
  // Writes `response` (as the answer to a HEAD if `head`); false if it could not be written.
  awaitable<bool> write(const ApiResponse& response, unsigned version, bool keep_alive, bool head);
  // After answering a request whose body was not read: stop sending, drop what the client
  // still sends for a moment (bounded), then close, so the answer is not lost to a reset.
  awaitable<void> linger_and_close();
  void set_phase(Phase phase);

  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  const AdminSessionContext& context_;
  const bool probes_only_;
  std::string peer_;  // for log lines
  Phase phase_ = Phase::reading;
  std::chrono::steady_clock::time_point phase_since_;
  bool closed_ = false;
};

}  // namespace spark::gateway
