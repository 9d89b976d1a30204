#pragma once
// What a client says before its spark is woken for it (issue 19): a PROXY protocol header from a
// trusted proxy (who the client really is), then its first bytes (whether it is a person's SSH
// client at all). Read on the main loop with deadlines, before the connection counts as
// activity, so a health check, a port scan or `nc -z` that connects and leaves wakes nothing.
#include <chrono>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "gateway/asio.hpp"
#include "gateway/outcomes.hpp"

namespace spark::gateway {

struct GreetingRules {
  config::ProxyProtocol proxy = config::ProxyProtocol::off;
  bool proxy_trusted = false;  // the peer is in trusted_proxies: only then is a header believed
  // Wait for the client's first bytes before going on (wake_on "data" and the spark not
  // running); a client silent for `wake_grace` goes on too (it waits for the server's banner).
  bool wait_for_data = true;
  std::chrono::milliseconds wake_grace{1000};
  // The first bytes must be an SSH identification (a spark's SSH port); a dev port takes any.
  bool expect_ssh = true;
  // How long a PROXY header, or an identification line already begun, may take to arrive.
  std::chrono::milliseconds header_timeout{5000};
};

struct Greeting {
  // Set when the connection must close without a wake (outcomes.hpp says each reason).
  std::optional<TurnedAway> turned_away;
  // The client's bytes read so far, after any PROXY header: passed on to the spark unchanged.
  std::string bytes;
  std::optional<tcp::endpoint> client;  // the real client, from a PROXY header
  bool silent = false;                  // it sent nothing within wake_grace
  std::string reason;                   // why it was turned away, for the log
};

// Reads the greeting from `client` (nothing at all when neither rule needs a byte).
awaitable<Greeting> read_greeting(tcp::socket& client, GreetingRules rules);

// Only the PROXY header, for the jump host, whose descriptor goes to libssh next: not a byte
// past the header is read (under `optional`, the first byte is peeked; a client silent for
// `wake_grace` has none). `bytes` stays empty. A LOCAL header ends it as proxy_local; the
// caller decides what that means.
awaitable<Greeting> read_proxy_header_alone(tcp::socket& client, GreetingRules rules);

}  // namespace spark::gateway
