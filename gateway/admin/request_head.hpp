#pragma once
// What the admin server knows of a request once its header is in, before any body byte is
// read, and the strict parsing of its parts. No sockets here: the router decides from this
// alone, and tests drive it directly (tests/unit/gateway/admin/admin_request_test.cpp).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace spark::gateway {

struct RequestHead {
  std::string method;  // as sent: "GET", "POST", ...
  std::string target;  // origin-form: "/api/v1/sparks/x/wake?wait=true"
  std::optional<std::string> host;
  std::optional<std::string> authorization;
  std::optional<std::string> content_type;
  bool x_requested_with = false;  // the header is present (any value)
  std::optional<std::uint64_t> content_length;  // declared
  bool chunked = false;                         // Transfer-Encoding: chunked
  bool has_body() const { return chunked || (content_length && *content_length > 0); }
};

// The target split and percent-decoded. Decoding is strict: "%" must be followed by two hex
// digits; anything else makes the whole target invalid (a 400, never a guess).
struct RequestTarget {
  std::string path;                   // as sent, without the query (for messages)
  std::vector<std::string> segments;  // path split on "/" after the leading one, each decoded
  std::vector<std::pair<std::string, std::string>> query;  // decoded ("+" is a space)
  // The first value of `key`; nullopt if absent. "?wait" and "?wait=" give "".
  std::optional<std::string> param(std::string_view key) const;
};

// nullopt, with `why` filled, for a target that is not origin-form ("/...") or whose
// percent-encoding is malformed.
std::optional<RequestTarget> parse_request_target(std::string_view target, std::string* why);

// Decodes %XX escapes (and "+" as a space if asked); nullopt on a malformed escape.
std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space);

// The credentials of "Authorization: Bearer TOKEN": the scheme is case-insensitive and followed
// by one or more spaces (RFC 9110 section 11.4, RFC 6750 section 2.1). nullopt for any other
// scheme or an empty token.
std::optional<std::string_view> bearer_credentials(std::string_view authorization);

// A Host header a browser sends only to this machine's loopback listener: "localhost", an
// IPv4 address in 127.0.0.0/8 or [::1], with or without a port. Anything else is what a page
// of another site would send after rebinding its DNS name to 127.0.0.1.
bool is_loopback_host(std::string_view host);

// True for "application/json", with any parameters and in any case. A browser cannot send this
// type cross-origin without a CORS preflight, which the admin server never grants.
bool is_json_media_type(std::string_view content_type);

// Case-insensitive ASCII comparison.
bool iequals(std::string_view a, std::string_view b);

// `text` with bytes outside printable ASCII escaped as \xNN, for log lines.
std::string printable(std::string_view text);

}  // namespace spark::gateway
