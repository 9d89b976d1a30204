#pragma once
// A spark's dev ports written as text, as the Deployment annotation `spark-gateway/ports` and
// `kubernetes.ports` give them: "web=3000,api=8080", or "3000,8080" (each named after its
// number), or a mix. Spaces around items are allowed; an empty text is no ports.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace spark::config {

// A name's longest: the gateway records its port as the annotation `port.NAME`, and an
// annotation's name part is at most 63 characters.
inline constexpr std::size_t kMaxPortNameLength = 58;

struct NamedPort {
  std::string name;  // an RFC 1123 label, never "ssh"
  int port = 0;      // the spark's own, 1-65535
  friend bool operator==(const NamedPort&, const NamedPort&) = default;
};

// Parses `text`; nullopt with `why` ("\"web=70000\": 70000 is not a port") on the first bad
// item, a repeated name or a repeated port.
std::optional<std::vector<NamedPort>> parse_port_list(std::string_view text, std::string* why = nullptr);

}  // namespace spark::config
