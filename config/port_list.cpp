#include "config/port_list.hpp"

#include <charconv>
#include <set>

#include "config/spark_name.hpp"

namespace spark::config {
namespace {

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

std::optional<int> port_number(std::string_view text) {
  int port = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (ec != std::errc() || end != text.data() + text.size() || port < 1 || port > 65535) return std::nullopt;
  return port;
}

}  // namespace

std::optional<std::vector<NamedPort>> parse_port_list(std::string_view text, std::string* why) {
  const auto fail = [&](std::string_view item, const std::string& reason) {
    // Built with append: GCC 12 warns falsely (-Wrestrict, bug 105329) on "\"" + string.
    if (why) why->assign(1, '"').append(item).append("\": ").append(reason);
    return std::nullopt;
  };
  std::vector<NamedPort> out;
  std::set<std::string> names;
  std::set<int> numbers;
  if (trimmed(text).empty()) return out;
  while (true) {
    const auto comma = text.find(',');
    const auto item = trimmed(text.substr(0, comma));
    const auto equals = item.find('=');
    const auto number_text = equals == std::string_view::npos ? item : trimmed(item.substr(equals + 1));
    const auto port = port_number(number_text);
    if (!port) return fail(item, std::string(number_text) + " is not a port (1-65535)");
    const std::string name(equals == std::string_view::npos ? number_text : trimmed(item.substr(0, equals)));
    if (!is_valid_spark_name(name)) return fail(item, "\"" + name + "\" is not a port name (an RFC 1123 label)");
    if (name == "ssh") return fail(item, "\"ssh\" is the SSH port's name");
    // It names the annotation port.NAME, whose name part is at most 63 characters.
    if (name.size() > kMaxPortNameLength)
      return fail(item, "\"" + name + "\" is longer than " + std::to_string(kMaxPortNameLength) + " characters");
    if (!names.insert(name).second) return fail(item, "the name " + name + " is given twice");
    if (!numbers.insert(*port).second) return fail(item, "port " + std::to_string(*port) + " is given twice");
    out.push_back({name, *port});
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace spark::config
