#include "gateway/admin/admin_session.hpp"

#include <spdlog/spdlog.h>

#include <array>

#include <boost/beast/http.hpp>

namespace spark::gateway {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;

// Browsers send a few KiB; nothing the API needs comes near this.
constexpr std::size_t kHeaderLimit = 16 * 1024;
// The header and body of one request, plus the start of a pipelined next one.
constexpr std::size_t kReadBufferLimit = 64 * 1024;
// What linger_and_close() drops at most, and for how long.
constexpr std::size_t kLingerBytes = 256 * 1024;
constexpr std::chrono::seconds kLingerTime{1};

bool is_http_error(const error_code& ec) {
  return &ec.category() == &http::make_error_code(http::error::bad_target).category();
}

RequestHead head_of(const http::request_parser<http::string_body>& parser) {
  const auto& req = parser.get();
  auto field = [&req](http::field f) -> std::optional<std::string> {
    const auto it = req.find(f);
    if (it == req.end()) return std::nullopt;
    return std::string(it->value());
  };
  RequestHead head;
  head.method = std::string(req.method_string());
  head.target = std::string(req.target());
  head.host = field(http::field::host);
  head.authorization = field(http::field::authorization);
  head.content_type = field(http::field::content_type);
  head.x_requested_with = req.find("X-Requested-With") != req.end();
  if (const auto length = parser.content_length()) head.content_length = *length;
  head.chunked = parser.chunked();
  return head;
}

// Why a request whose header could not be read gets no answer at all (nullopt: just close),
// or the answer it gets.
std::optional<ApiResponse> answer_to_unreadable_header(const error_code& ec) {
  if (ec == http::error::header_limit || ec == http::error::buffer_overflow)
    return json_error(431, "request header fields too large (at most " + std::to_string(kHeaderLimit / 1024) +
                               " KiB in all)");
  if (ec == http::error::end_of_stream || ec == http::error::partial_message || !is_http_error(ec))
    return std::nullopt;  // the client left, timed out or was closed to make room
  return json_error(400, "malformed HTTP request: " + ec.message());
}

}  // namespace

AdminSession::AdminSession(tcp::socket socket, const AdminSessionContext& context, bool probes_only)
    : stream_(std::move(socket)), buffer_(kReadBufferLimit), context_(context), probes_only_(probes_only) {
  error_code ec;
  const auto peer = stream_.socket().remote_endpoint(ec);
  peer_ = ec ? std::string("?") : peer.address().to_string() + ":" + std::to_string(peer.port());
  set_phase(Phase::reading);
}

void AdminSession::set_phase(Phase phase) {
  phase_ = phase;
  phase_since_ = std::chrono::steady_clock::now();
}

void AdminSession::close() {
  if (closed_) return;
  closed_ = true;
  stream_.close();
}

awaitable<void> AdminSession::run() {
  Next next = Next::go_on;
  while (next == Next::go_on && !closed_) next = co_await handle_request();
  if (next == Next::finish && !closed_) {
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }
  close();
}

awaitable<AdminSession::Next> AdminSession::handle_request() {
  set_phase(Phase::reading);
  Parser parser;
  parser.header_limit(kHeaderLimit);
  parser.body_limit(boost::none);  // the router judges the declared length before any body byte
  // One deadline for the whole request, header and body: a client sending a byte now and then
  // is cut all the same.
  stream_.expires_after(context_.request_timeout);
  if (const Next next = co_await read_header(parser); next != Next::go_on) co_return next;
  const Admission admission = admit(parser);
  if (const auto* refusal = std::get_if<ApiResponse>(&admission)) co_return co_await refuse(*refusal, parser);
  const AdminCall call = std::get<AdminCall>(admission);
  if (!parser.is_done()) {
    if (const Next next = co_await read_body(parser); next != Next::go_on) co_return next;
  }
  const auto& req = parser.get();
  const bool keep_alive = req.keep_alive();
  set_phase(Phase::serving);
  const ApiResponse response = co_await serve(call, req.body());
  if (closed_) co_return Next::finish;
  set_phase(Phase::writing);
  const bool written = co_await write(response, req.version(), keep_alive, req.method() == http::verb::head);
  co_return (written && keep_alive) ? Next::go_on : Next::finish;
}

awaitable<AdminSession::Next> AdminSession::read_header(Parser& parser) {
  error_code ec;
  co_await http::async_read_header(stream_, buffer_, parser, asio::redirect_error(use_awaitable, ec));
  if (!ec) co_return Next::go_on;
  if (const auto answer = answer_to_unreadable_header(ec)) {
    spdlog::debug("admin: {}: {} ({})", peer_, ec.message(), answer->status);
    set_phase(Phase::writing);
    if (co_await write(*answer, 11, false, false)) co_await linger_and_close();
  } else if (ec == beast::error::timeout) {
    spdlog::debug("admin: {}: no complete request within {} ms; closing", peer_, context_.request_timeout.count());
  }
  close();
  co_return Next::closed;
}

Admission AdminSession::admit(const Parser& parser) const {
  const auto& req = parser.get();
  if (req.count(http::field::host) > 1) return json_error(400, "more than one Host header");
  Admission admission = context_.router.admit(head_of(parser));
  if (const auto* call = std::get_if<AdminCall>(&admission); call && probes_only_ && !call->is_probe())
    return json_error(503,
                      "too many admin connections (admin.max_connections); over it only /healthz and "
                      "/readyz are served");
  return admission;
}

awaitable<AdminSession::Next> AdminSession::refuse(const ApiResponse& refusal, const Parser& parser) {
  const auto& req = parser.get();
  spdlog::debug("admin: {}: {} {} -> {} {}", peer_, printable(std::string(req.method_string())),
                printable(std::string(req.target())), refusal.status,
                printable(refusal.body.substr(0, refusal.body.find('\n'))));
  // The body, if any, was never read: the connection cannot carry another request.
  const bool keep_alive = parser.is_done() && req.keep_alive();
  set_phase(Phase::writing);
  if (!co_await write(refusal, req.version(), keep_alive, req.method() == http::verb::head))
    co_return Next::finish;
  if (keep_alive) co_return Next::go_on;
  co_await linger_and_close();
  co_return Next::closed;
}

awaitable<AdminSession::Next> AdminSession::read_body(Parser& parser) {
  const auto& req = parser.get();
  const bool head_request = req.method() == http::verb::head;
  error_code ec;
  if (const auto expect = req.find(http::field::expect);
      expect != req.end() && iequals(expect->value(), "100-continue")) {
    http::response<http::empty_body> go_on{http::status::continue_, req.version()};
    co_await http::async_write(stream_, go_on, asio::redirect_error(use_awaitable, ec));
    if (ec) co_return Next::finish;
  }
  parser.body_limit(kAdminMaxBodyBytes);  // chunked bodies too: counted as decoded
  co_await http::async_read(stream_, buffer_, parser, asio::redirect_error(use_awaitable, ec));
  if (!ec) co_return Next::go_on;
  std::optional<ApiResponse> answer;
  if (ec == http::error::body_limit)
    answer = json_error(413, "request body too large");
  else if (is_http_error(ec) && ec != http::error::partial_message)
    answer = json_error(400, "malformed HTTP request body: " + ec.message());
  if (answer) {
    set_phase(Phase::writing);
    if (co_await write(*answer, req.version(), false, head_request)) co_await linger_and_close();
  }
  close();
  co_return Next::closed;
}

awaitable<ApiResponse> AdminSession::serve(const AdminCall& call, const std::string& body) {
  try {
    if (call.inline_safe()) co_return context_.router.serve(call, body);
    const AdminRouter* router = &context_.router;
    const auto work = [router, call, body] { return router->serve(call, body); };
    auto& pool = call.long_running() ? context_.long_calls : context_.quick_calls;
    co_return co_await run_blocking(pool, work);
  } catch (const std::exception& e) {
    spdlog::error("admin: {}", e.what());
    co_return json_error(500, e.what(), call.spark);
  }
}

awaitable<bool> AdminSession::write(const ApiResponse& response, unsigned version, bool keep_alive, bool head) {
  http::response<http::string_body> res;
  res.version(version);
  res.result(static_cast<unsigned>(response.status));
  res.set(http::field::content_type, response.content_type);
  for (const auto& [name, value] : response.headers) res.set(name, value);
  res.keep_alive(keep_alive);
  if (!head) res.body() = response.body;
  res.content_length(response.body.size());  // a HEAD answer says what a GET would send
  stream_.expires_after(context_.request_timeout);
  error_code ec;
  co_await http::async_write(stream_, res, asio::redirect_error(use_awaitable, ec));
  co_return !ec;
}

awaitable<void> AdminSession::linger_and_close() {
  error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream_.expires_after(kLingerTime);
  std::array<char, 4096> sink{};
  std::size_t dropped = 0;
  while (!ec && !closed_ && dropped < kLingerBytes) {
    dropped += co_await stream_.async_read_some(asio::buffer(sink), asio::redirect_error(use_awaitable, ec));
  }
  close();
}

}  // namespace spark::gateway
