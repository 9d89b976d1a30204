// Unit tests for gateway/ssh_identification.hpp: the identification lines real SSH clients send
// (RFC 4253 section 4.2), what port scanners, browsers and TLS clients send instead, and where
// the line is cut by the network.
#include "gateway/ssh_identification.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace spark::gateway {
namespace {

SshIdentified identified(std::string_view bytes) {
  const auto checked = check_ssh_identification(bytes);
  if (const auto* no = std::get_if<NotSsh>(&checked)) ADD_FAILURE() << "not SSH: " << no->reason;
  if (std::holds_alternative<SshIdentificationIncomplete>(checked)) ADD_FAILURE() << "incomplete";
  const auto* yes = std::get_if<SshIdentified>(&checked);
  return yes ? *yes : SshIdentified{};
}

std::string not_ssh(std::string_view bytes) {
  const auto checked = check_ssh_identification(bytes);
  if (const auto* no = std::get_if<NotSsh>(&checked)) return no->reason;
  ADD_FAILURE() << "taken for SSH or incomplete: " << testing::PrintToString(std::string(bytes));
  return {};
}

bool incomplete(std::string_view bytes) {
  return std::holds_alternative<SshIdentificationIncomplete>(check_ssh_identification(bytes));
}

// What the client libraries in use send first, as captured from each.
const std::vector<std::string> kClients = {
    "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
    "SSH-2.0-OpenSSH_for_Windows_8.1\r\n",
    "SSH-2.0-PuTTY_Release_0.78\r\n",
    "SSH-2.0-libssh_0.10.4\r\n",
    "SSH-2.0-paramiko_3.1.0\r\n",
    "SSH-2.0-Go\r\n",
    "SSH-2.0-dropbear_2022.83\r\n",
    "SSH-2.0-WinSCP_release_5.21.8\r\n",
    "SSH-2.0-JSCH-0.1.54\r\n",  // a '-' in the software version: RFC 4253 forbids it, sshd takes it
    "SSH-2.0-Go\n",             // LF alone: sshd takes it
    "SSH-1.99-OpenSSH_3.9p1\r\n",
};

TEST(SshIdentification, RealClients) {
  for (const std::string& line : kClients) {
    const auto id = identified(line);
    EXPECT_EQ(id.length, line.size()) << line;
    EXPECT_EQ(id.identification, line.substr(0, line.find_first_of("\r\n"))) << line;
  }
}

TEST(SshIdentification, TheClientsNextBytesAreNotPartOfIt) {
  // OpenSSH sends its KEXINIT right behind the line; it often arrives in the same read.
  const std::string line = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n";
  const std::string kexinit("\x00\x00\x05\xdc\x0a\x14\x8f\x1b\x00", 9);
  const auto id = identified(line + kexinit);
  EXPECT_EQ(id.identification, "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3");
  EXPECT_EQ(id.length, line.size());
}

TEST(SshIdentification, EveryPrefixIsIncomplete) {
  for (const std::string& line : kClients) {
    for (std::size_t k = 0; k < line.size(); ++k) {
      const auto checked = check_ssh_identification(std::string_view(line).substr(0, k));
      const auto* more = std::get_if<SshIdentificationIncomplete>(&checked);
      ASSERT_TRUE(more) << k << " bytes of " << line;
      EXPECT_GE(k + more->at_most, line.size());
    }
  }
  EXPECT_EQ(std::get<SshIdentificationIncomplete>(check_ssh_identification("")).at_most, 255u);
}

TEST(SshIdentification, Http) {
  const std::string request = "GET / HTTP/1.1\r\nHost: brave-dolphin:22\r\nUser-Agent: curl/7.88.1\r\n\r\n";
  EXPECT_EQ(not_ssh(request), "starts with \"GET / HTTP/1.1\\r\\nHost: brave-dolp\"") << "32 bytes quoted";
  // Decided at the first byte: nothing to wait for.
  EXPECT_EQ(not_ssh("G"), "starts with \"G\"");
  EXPECT_EQ(not_ssh("GET "), "starts with \"GET \"");
  EXPECT_EQ(not_ssh("HEAD / HTTP/1.0\r\n\r\n"), "starts with \"HEAD / HTTP/1.0\\r\\n\\r\\n\"");
  EXPECT_EQ(not_ssh("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            "starts with \"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n\"");
}

TEST(SshIdentification, TlsClientHello) {
  // A TLS 1.2/1.3 record: handshake (0x16), version 3.1, length, ClientHello (0x01), ...
  const std::string hello("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xa5\x5a", 13);
  EXPECT_EQ(not_ssh(hello), "starts with \"\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xfc\\x03\\x03\\xa5Z\"");
  EXPECT_EQ(not_ssh(hello.substr(0, 1)), "starts with \"\\x16\"");
}

TEST(SshIdentification, ProbesAndLookalikes) {
  EXPECT_EQ(not_ssh("\r\n"), "starts with \"\\r\\n\"");
  EXPECT_EQ(not_ssh(std::string(1, '\0')), "starts with \"\\x00\"");
  EXPECT_EQ(not_ssh("ssh-2.0-OpenSSH_9.2p1\r\n"), "starts with \"ssh-2.0-OpenSSH_9.2p1\\r\\n\"");
  EXPECT_EQ(not_ssh("PROXY TCP4 192.0.2.10 198.51.100.7 51234 22\r\n"),
            "starts with \"PROXY TCP4 192.0.2.10 198.51.100\"")
      << "a PROXY header where none is expected";
  // Lines before the identification are a server's privilege; sshd refuses them from a client.
  EXPECT_EQ(not_ssh("hello\r\nSSH-2.0-OpenSSH_9.2p1\r\n"),
            "starts with \"hello\\r\\nSSH-2.0-OpenSSH_9.2p1\\r\\n\"");
  EXPECT_EQ(not_ssh("SSH-2.0\r\n"), "starts with \"SSH-2.0\\r\\n\"");
  EXPECT_EQ(not_ssh("SSH-2.1-x\r\n"), "starts with \"SSH-2.1-x\\r\\n\"");
  EXPECT_EQ(not_ssh("\"\\"), "starts with \"\\x22\\x5c\"") << "quotes and backslashes cannot confuse the log";
}

TEST(SshIdentification, SshOneIsRefused) {
  // SSH 1.5 (protocol 1 only): no sshd behind the gateway speaks it. Refused at the '5'.
  EXPECT_EQ(not_ssh("SSH-1.5-OpenSSH_2.9p2\r\n"), "starts with \"SSH-1.5-OpenSSH_2.9p2\\r\\n\"");
  EXPECT_TRUE(incomplete("SSH-1."));
  EXPECT_EQ(not_ssh("SSH-1.5"), "starts with \"SSH-1.5\"");
}

TEST(SshIdentification, TheLineItself) {
  EXPECT_EQ(not_ssh("SSH-2.0-\r\n"), "nothing after \"SSH-2.0-\"");
  EXPECT_EQ(not_ssh("SSH-1.99-\n"), "nothing after \"SSH-1.99-\"");
  EXPECT_EQ(not_ssh("SSH-2.0-x\ry\r\n"), "identification line has a CR not followed by LF");
  EXPECT_EQ(not_ssh("SSH-2.0-\r\r\n"), "identification line has a CR not followed by LF");
  EXPECT_EQ(not_ssh(std::string("SSH-2.0-x\0y\r\n", 13)), "identification line holds a NUL byte");
  EXPECT_TRUE(incomplete("SSH-2.0-x\r")) << "the LF may be in the next read";
  // Comments after a space, and bytes the RFC does not allow but sshd reads, are sshd's business.
  const auto id = identified("SSH-2.0-Foo_1.0 a comment\twith \x01 bytes\r\n");
  EXPECT_EQ(id.identification, "SSH-2.0-Foo_1.0 a comment\\twith \\x01 bytes") << "escaped for the log";
}

TEST(SshIdentification, At255Bytes) {
  const std::string head = "SSH-2.0-";
  // 255 bytes with CR LF, and with LF alone: the longest line there is.
  const std::string crlf = head + std::string(255 - head.size() - 2, 'v') + "\r\n";
  ASSERT_EQ(crlf.size(), 255u);
  EXPECT_EQ(identified(crlf).length, 255u);
  const std::string lf = head + std::string(255 - head.size() - 1, 'v') + "\n";
  EXPECT_EQ(identified(lf).length, 255u);
  // One byte more, the line end does not make it.
  const std::string long_crlf = head + std::string(255 - head.size() - 1, 'v') + "\r\n";
  EXPECT_EQ(not_ssh(long_crlf), "no line end in the first 255 bytes");
  EXPECT_EQ(not_ssh(long_crlf.substr(0, 255)), "no line end in the first 255 bytes")
      << "decided at byte 255: a CR there leaves its LF past the limit";
  EXPECT_TRUE(incomplete(long_crlf.substr(0, 254)));
  EXPECT_EQ(not_ssh(head + std::string(1000, 'v')), "no line end in the first 255 bytes");
}

TEST(SshIdentification, DecisionsStay) {
  for (const std::string& bytes :
       std::vector<std::string>{"G", "SSH-1.5", "SSH-2.0-\r\n", "SSH-2.0-x\ry", std::string("SSH-2.0-\0", 9)}) {
    const auto first = check_ssh_identification(bytes);
    ASSERT_TRUE(std::holds_alternative<NotSsh>(first)) << bytes;
    for (const std::string& more : std::vector<std::string>{"", "x", "\r\n", "SSH-2.0-OpenSSH_9.2p1\r\n"})
      EXPECT_TRUE(std::holds_alternative<NotSsh>(check_ssh_identification(bytes + more))) << bytes << more;
  }
}

}  // namespace
}  // namespace spark::gateway
