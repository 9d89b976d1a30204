#include "gateway/ssh_identification.hpp"

#include <algorithm>
#include <array>
#include <cstdio>

namespace spark::gateway {
namespace {

// What an identification the gateway lets through starts with.
constexpr std::array<std::string_view, 2> kAccepted = {"SSH-2.0-", "SSH-1.99-"};
// How much of a refused client's bytes its log line quotes.
constexpr std::size_t kQuoted = 32;

// `text` for a log line: printable ASCII as is, CR, LF and tab as \r, \n, \t, other bytes (and
// the backslash and quote that would make it ambiguous) as \xNN.
std::string escaped(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u >= 0x20 && u < 0x7f && c != '\\' && c != '"') {
      out.push_back(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned>(u));
      out += hex;
    }
  }
  return out;
}

NotSsh starts_with(std::string_view bytes) {
  return NotSsh{"starts with \"" + escaped(bytes.substr(0, kQuoted)) + "\""};
}

// Whether `bytes` and `expected` agree on their common length.
bool agrees_with(std::string_view bytes, std::string_view expected) {
  const std::size_t n = std::min(bytes.size(), expected.size());
  return bytes.substr(0, n) == expected.substr(0, n);
}

}  // namespace

SshIdentificationCheck check_ssh_identification(std::string_view bytes) {
  // "SSH-" and the protocol version: refused at the first byte that leaves both accepted forms.
  std::size_t version_end = 0;
  bool could_be = false;
  for (const std::string_view accepted : kAccepted) {
    if (!agrees_with(bytes, accepted)) continue;
    could_be = true;
    if (bytes.size() >= accepted.size()) version_end = accepted.size();
  }
  if (!could_be) return starts_with(bytes);
  if (version_end == 0) return SshIdentificationIncomplete{kSshIdentificationMaxLength - bytes.size()};

  // The software version and comments, up to the LF that ends the line within 255 bytes. As
  // sshd reads it: a CR must be followed by LF, a NUL is never part of a line.
  const std::size_t window = std::min(bytes.size(), kSshIdentificationMaxLength);
  for (std::size_t i = version_end; i < window; ++i) {
    const char c = bytes[i];
    if (c == '\n') {
      const std::size_t content_end = i > 0 && bytes[i - 1] == '\r' ? i - 1 : i;
      if (content_end == version_end)
        return NotSsh{"nothing after \"" + std::string(bytes.substr(0, version_end)) + "\""};
      return SshIdentified{escaped(bytes.substr(0, content_end)), i + 1};
    }
    if (c == '\r') {
      if (i + 1 == kSshIdentificationMaxLength) break;  // its LF would be byte 256
      if (i + 1 == bytes.size()) return SshIdentificationIncomplete{1};
      if (bytes[i + 1] != '\n') return NotSsh{"identification line has a CR not followed by LF"};
    }
    if (c == '\0') return NotSsh{"identification line holds a NUL byte"};
  }
  if (bytes.size() >= kSshIdentificationMaxLength)
    return NotSsh{"no line end in the first " + std::to_string(kSshIdentificationMaxLength) + " bytes"};
  return SshIdentificationIncomplete{kSshIdentificationMaxLength - bytes.size()};
}

}  // namespace spark::gateway
