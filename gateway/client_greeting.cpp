#include "gateway/client_greeting.hpp"

#include <sys/socket.h>

#include <variant>

#include "config/duration.hpp"
#include "gateway/proxy_protocol.hpp"
#include "gateway/ssh_identification.hpp"

namespace spark::gateway {
namespace {

using Clock = std::chrono::steady_clock;

enum class ReadEnd { data, closed, timed_out };

// Appends what arrives (at most `at_most` bytes) to `bytes`, or says why nothing did before
// `deadline`.
awaitable<ReadEnd> read_more(tcp::socket& socket, std::string& bytes, std::size_t at_most,
                             Clock::time_point deadline) {
  const std::size_t had = bytes.size();
  bytes.resize(had + at_most);
  asio::steady_timer timer(co_await asio::this_coro::executor, deadline);
  auto read = socket.async_read_some(asio::buffer(bytes.data() + had, at_most), asio::as_tuple(use_awaitable));
  auto wait = timer.async_wait(asio::as_tuple(use_awaitable));
  const auto first = co_await (std::move(read) || std::move(wait));
  if (first.index() == 1) {
    bytes.resize(had);
    co_return ReadEnd::timed_out;
  }
  const auto [ec, n] = std::get<0>(first);
  bytes.resize(had + n);
  co_return ec || n == 0 ? ReadEnd::closed : ReadEnd::data;
}

// `client`: who it is, when a trusted header said so before it was turned away.
Greeting ended(TurnedAway why, std::string reason, std::optional<tcp::endpoint> client = std::nullopt) {
  Greeting g;
  g.turned_away = why;
  g.reason = std::move(reason);
  g.client = client;
  return g;
}

// Under `optional` on the jump host: whether the client's first byte could begin a header,
// peeked so that it stays in the socket. A client silent for `grace` has none (it waits for
// the server's banner).
enum class Peek { header, no_header, closed };
awaitable<Peek> peek_for_header(tcp::socket& socket, std::chrono::milliseconds grace) {
  asio::steady_timer timer(co_await asio::this_coro::executor, grace);
  auto readable = socket.async_wait(tcp::socket::wait_read, asio::as_tuple(use_awaitable));
  auto wait = timer.async_wait(asio::as_tuple(use_awaitable));
  const auto first = co_await (std::move(readable) || std::move(wait));
  if (first.index() == 1) co_return Peek::no_header;
  char byte = 0;
  if (::recv(socket.native_handle(), &byte, 1, MSG_PEEK) <= 0) co_return Peek::closed;
  co_return looks_like_proxy_header(std::string_view(&byte, 1)) ? Peek::header : Peek::no_header;
}

// The PROXY header, when the rules look for one. Returns the end if the connection must not go
// on; otherwise `g` holds the client's address (if the header named it) and its bytes after it.
// With `leave_the_rest`, not a byte past the header is read (the descriptor goes to libssh
// next): each read asks for what the header still lacks at least, and under `optional` the
// first byte is peeked.
awaitable<std::optional<Greeting>> read_proxy_header(tcp::socket& socket, const GreetingRules& rules, Greeting& g,
                                                     bool leave_the_rest) {
  const auto deadline = Clock::now() + rules.header_timeout;
  if (!rules.proxy_trusted) {
    if (rules.proxy == config::ProxyProtocol::required)
      co_return ended(TurnedAway::proxy_refused, "not in trusted_proxies, and a PROXY header is required");
    co_return std::nullopt;  // optional: its first bytes are checked below (a header is refused)
  }
  if (leave_the_rest && rules.proxy == config::ProxyProtocol::optional) {
    const Peek peek = co_await peek_for_header(socket, rules.wake_grace);
    if (peek == Peek::closed) co_return ended(TurnedAway::closed_silent, "closed before sending a byte");
    if (peek == Peek::no_header) co_return std::nullopt;  // the client's bytes stay for libssh
  }
  std::string bytes;
  for (;;) {
    const auto parsed = parse_proxy_header(bytes);
    if (const auto* header = std::get_if<ProxyHeader>(&parsed)) {
      if (header->local) co_return ended(TurnedAway::proxy_local, "a PROXY LOCAL header (a health check)");
      if (header->addresses) g.client = header->addresses->source;
      g.bytes = bytes.substr(header->length);
      co_return std::nullopt;
    }
    if (const auto* error = std::get_if<ProxyHeaderError>(&parsed)) {
      if (rules.proxy == config::ProxyProtocol::optional && !bytes.empty() && !looks_like_proxy_header(bytes)) {
        g.bytes = std::move(bytes);  // no header: the client's own bytes
        co_return std::nullopt;
      }
      co_return ended(TurnedAway::proxy_refused, error->reason);
    }
    const auto& incomplete = std::get<ProxyHeaderIncomplete>(parsed);
    const auto at_most = leave_the_rest ? incomplete.at_least : incomplete.at_most;
    // Under `optional`, a client silent for wake_grace sends no header: it waits for the
    // server's banner, and goes on as itself.
    const bool may_be_silent = rules.proxy == config::ProxyProtocol::optional && bytes.empty();
    const auto until = may_be_silent ? std::min(deadline, Clock::now() + rules.wake_grace) : deadline;
    switch (co_await read_more(socket, bytes, at_most, until)) {
      case ReadEnd::data: continue;
      case ReadEnd::closed:
        co_return ended(bytes.empty() ? TurnedAway::closed_silent : TurnedAway::proxy_refused,
                        bytes.empty() ? "closed before sending a byte" : "closed inside its PROXY header");
      case ReadEnd::timed_out:
        if (may_be_silent) {
          g.silent = true;
          co_return std::nullopt;
        }
        co_return ended(TurnedAway::proxy_refused,
                        "no complete PROXY header within " + config::format_duration(rules.header_timeout));
    }
  }
}

}  // namespace

awaitable<Greeting> read_greeting(tcp::socket& client, GreetingRules rules) {
  Greeting g;
  if (rules.proxy != config::ProxyProtocol::off) {
    if (auto end = co_await read_proxy_header(client, rules, g, false)) co_return std::move(*end);
  }
  const bool check_untrusted_header = rules.proxy != config::ProxyProtocol::off && !rules.proxy_trusted;
  if (!rules.wait_for_data && !check_untrusted_header) co_return g;
  // The first bytes: a person's SSH client sends its identification at once.
  if (g.silent) co_return g;  // silent past wake_grace already (no header came either)
  if (g.bytes.empty()) {
    switch (co_await read_more(client, g.bytes, kSshIdentificationMaxLength, Clock::now() + rules.wake_grace)) {
      case ReadEnd::closed: co_return ended(TurnedAway::closed_silent, "closed before sending a byte", g.client);
      case ReadEnd::timed_out:  // silent past wake_grace: a client that waits for the server's banner
        g.silent = true;
        co_return g;
      case ReadEnd::data: break;
    }
  }
  if (check_untrusted_header && looks_like_proxy_header(g.bytes))
    co_return ended(TurnedAway::proxy_refused, "a PROXY header from a peer not in trusted_proxies");
  if (!rules.wait_for_data || !rules.expect_ssh) co_return g;
  const auto deadline = Clock::now() + rules.header_timeout;
  for (;;) {
    const auto check = check_ssh_identification(g.bytes);
    if (std::holds_alternative<SshIdentified>(check)) co_return g;
    if (const auto* no = std::get_if<NotSsh>(&check)) {
      co_return ended(TurnedAway::not_ssh, "not an SSH client: " + no->reason, g.client);
    }
    const auto at_most = std::get<SshIdentificationIncomplete>(check).at_most;
    const auto more = co_await read_more(client, g.bytes, at_most, deadline);
    if (more == ReadEnd::closed)
      co_return ended(TurnedAway::not_ssh, "closed inside its identification line", g.client);
    if (more == ReadEnd::timed_out)
      co_return ended(TurnedAway::not_ssh, "its identification line did not end in time", g.client);
  }
}

awaitable<Greeting> read_proxy_header_alone(tcp::socket& client, GreetingRules rules) {
  Greeting g;
  if (rules.proxy == config::ProxyProtocol::off) co_return g;
  if (auto end = co_await read_proxy_header(client, rules, g, true)) co_return std::move(*end);
  // Under `optional`, bytes that began like a header and were not one: taken from the socket,
  // and not SSH either (an SSH client's first byte is 'S').
  if (!g.bytes.empty()) co_return ended(TurnedAway::proxy_refused, "neither a PROXY header nor an SSH client");
  co_return g;
}

}  // namespace spark::gateway
