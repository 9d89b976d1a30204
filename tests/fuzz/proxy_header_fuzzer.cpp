// A connection's first bytes, as the gateway reads them (issue 19): a PROXY header and then the
// client's SSH identification. Both parsers are stateless over "the bytes so far", so what they
// answer for a prefix must hold for the whole: the input is checked whole and cut at a point
// the fuzzer chooses, as a network would cut it, and the two answers must agree. Never a crash,
// never a reason that is empty or not printable, never a length outside the input or the
// limits.
//
// Input: two bytes that choose the cut (little-endian, modulo the stream's length + 1), then
// the stream. The seeds in corpus/proxy_header are laid out the same way.
#include <cstdint>
#include <string_view>
#include <variant>

#include "gateway/proxy_protocol.hpp"
#include "gateway/ssh_identification.hpp"

namespace {

using namespace spark::gateway;

void require(bool condition) {
  if (!condition) __builtin_trap();
}

bool printable(std::string_view text) {
  for (const char c : text)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) return false;
  return !text.empty();
}

bool same(const ProxyHeader& a, const ProxyHeader& b) {
  if (a.version != b.version || a.local != b.local || a.length != b.length) return false;
  if (a.addresses.has_value() != b.addresses.has_value()) return false;
  return !a.addresses ||
         (a.addresses->source == b.addresses->source && a.addresses->destination == b.addresses->destination);
}

// What any answer about `bytes` must satisfy on its own.
void check_alone(std::string_view bytes, const ProxyHeaderParse& parsed) {
  if (const auto* header = std::get_if<ProxyHeader>(&parsed)) {
    require(header->length >= 15 && header->length <= bytes.size());
    require(header->version == 1 || header->version == 2);
    if (header->version == 1) require(header->length <= kProxyV1MaxLength && !header->local);
    if (header->version == 2) require(header->length >= 16 && header->length <= kProxyV2MaxLength);
    if (header->local) require(!header->addresses);
    require(looks_like_proxy_header(bytes.substr(0, 1)) && looks_like_proxy_header(bytes));
  } else if (const auto* more = std::get_if<ProxyHeaderIncomplete>(&parsed)) {
    require(more->at_least >= 1 && more->at_least <= more->at_most);
    require(bytes.size() + more->at_most <= kProxyV2MaxLength);
    require(bytes.empty() || looks_like_proxy_header(bytes));
  } else {
    require(printable(std::get<ProxyHeaderError>(parsed).reason));
  }
}

void fuzz_proxy_header(std::string_view stream, std::size_t cut) {
  const auto whole = parse_proxy_header(stream);
  const auto part = parse_proxy_header(stream.substr(0, cut));
  check_alone(stream, whole);
  check_alone(stream.substr(0, cut), part);

  if (const auto* header = std::get_if<ProxyHeader>(&part)) {
    require(std::holds_alternative<ProxyHeader>(whole) && same(*header, std::get<ProxyHeader>(whole)));
  } else if (const auto* bad = std::get_if<ProxyHeaderError>(&part)) {
    require(std::holds_alternative<ProxyHeaderError>(whole) &&
            std::get<ProxyHeaderError>(whole).reason == bad->reason);
  } else if (const auto* complete = std::get_if<ProxyHeader>(&whole)) {
    // Incomplete at the cut: the header ends within the bounds the cut was given.
    const auto& more = std::get<ProxyHeaderIncomplete>(part);
    require(cut + more.at_least <= complete->length && complete->length <= cut + more.at_most);
  }

  if (const auto* header = std::get_if<ProxyHeader>(&whole)) {
    // The header alone, without what follows it, is the same header.
    const auto alone = parse_proxy_header(stream.substr(0, header->length));
    require(std::holds_alternative<ProxyHeader>(alone) && same(std::get<ProxyHeader>(alone), *header));
  }
  if (!stream.empty() && !looks_like_proxy_header(stream))
    require(std::holds_alternative<ProxyHeaderError>(whole));
}

void check_alone(std::string_view bytes, const SshIdentificationCheck& checked) {
  if (const auto* ssh = std::get_if<SshIdentified>(&checked)) {
    require(ssh->length <= kSshIdentificationMaxLength && ssh->length <= bytes.size());
    require(bytes.substr(0, 8) == "SSH-2.0-" || bytes.substr(0, 9) == "SSH-1.99-");
    require(bytes[ssh->length - 1] == '\n');
    require(printable(ssh->identification));
  } else if (const auto* more = std::get_if<SshIdentificationIncomplete>(&checked)) {
    require(more->at_most >= 1 && bytes.size() + more->at_most <= kSshIdentificationMaxLength);
  } else {
    require(printable(std::get<NotSsh>(checked).reason));
  }
}

void fuzz_ssh_identification(std::string_view stream, std::size_t cut) {
  const auto whole = check_ssh_identification(stream);
  const auto part = check_ssh_identification(stream.substr(0, cut));
  check_alone(stream, whole);
  check_alone(stream.substr(0, cut), part);
  if (const auto* ssh = std::get_if<SshIdentified>(&part)) {
    const auto* also = std::get_if<SshIdentified>(&whole);
    require(also && also->identification == ssh->identification && also->length == ssh->length);
  } else if (const auto* no = std::get_if<NotSsh>(&part)) {
    // The verdict stays; the reason may quote more of the bytes, and only then differs.
    const auto* also = std::get_if<NotSsh>(&whole);
    require(also && (also->reason == no->reason ||
                     (no->reason.starts_with("starts with") && also->reason.starts_with("starts with"))));
  } else if (const auto* complete = std::get_if<SshIdentified>(&whole)) {
    require(cut < complete->length &&
            complete->length <= cut + std::get<SshIdentificationIncomplete>(part).at_most);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::string_view stream(reinterpret_cast<const char*>(data) + 2, size - 2);
  const std::size_t cut = (data[0] | static_cast<std::size_t>(data[1]) << 8) % (stream.size() + 1);
  fuzz_proxy_header(stream, cut);
  fuzz_ssh_identification(stream, cut);
  // As the gateway will use them: the client's bytes after a header are checked for SSH.
  const auto parsed = parse_proxy_header(stream);
  if (const auto* header = std::get_if<ProxyHeader>(&parsed)) {
    const std::string_view rest = stream.substr(header->length);
    fuzz_ssh_identification(rest, cut % (rest.size() + 1));
  }
  return 0;
}
