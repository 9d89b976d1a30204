#pragma once
// Whether a client's first bytes are an SSH client's: its identification line,
// "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n" (RFC 4253 section 4.2). The gateway wakes a spark
// for a connection that sends one and refuses, without waking anything, one that sends HTTP, a
// TLS ClientHello or a scanner's probe (issue 19). A pure check: no sockets. The caller feeds it
// the client's bytes so far and passes them on unchanged whatever it says.
//
// What counts, and why:
// - The identification is the first line. RFC 4253 lets a server send other lines before its
//   version, not a client, and sshd refuses a client that does ("client sent invalid protocol
//   identifier").
// - "SSH-2.0-", or "SSH-1.99-" (RFC 4253 section 5.1: speaks 2.0 and 1.x). SSH 1.x alone is
//   refused: no sshd behind the gateway speaks it.
// - At most 255 bytes with the line end (RFC 4253 section 4.2). sshd would read up to 8 KiB,
//   but no client sends more than a product name and version, and the limit bounds the wait.
// - The line ends in LF, with or without CR before it. The RFC says CR LF; OpenSSH's sshd
//   accepts a bare LF and so does the gateway, to refuse nothing sshd would take. As in sshd, a
//   CR not followed by LF or a NUL byte is refused, and something must follow "SSH-2.0-".
//   Anything else in the software version and comments is sshd's business.
#include <cstddef>
#include <string>
#include <string_view>
#include <variant>

namespace spark::gateway {

inline constexpr std::size_t kSshIdentificationMaxLength = 255;

// Every byte so far fits an identification line: read more. The line ends within `at_most`
// more bytes.
struct SshIdentificationIncomplete {
  std::size_t at_most = 0;
};

// An SSH client. `identification` is its line without the line end, non-printable bytes as
// \xNN, for the log ("SSH-2.0-PuTTY_Release_0.78"); `length` is the line's with its end.
struct SshIdentified {
  std::string identification;
  std::size_t length = 0;
};

// Not an SSH client. `reason` is short, for the log: `starts with "GET / HTTP/1.1\r\nHost: ex"`;
// it quotes at most 32 of the bytes given, escaped.
struct NotSsh {
  std::string reason;
};

using SshIdentificationCheck = std::variant<SshIdentificationIncomplete, SshIdentified, NotSsh>;

// Decides as early as the bytes allow: "GET " is refused at its first byte, a TLS record at its
// first. A prefix of a valid line is always Incomplete; once the answer is SshIdentified or
// NotSsh, more bytes do not change it (the reason may quote more of them).
SshIdentificationCheck check_ssh_identification(std::string_view first_bytes);

}  // namespace spark::gateway
