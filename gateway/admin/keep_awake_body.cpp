#include "gateway/admin/keep_awake_body.hpp"

#include <nlohmann/json.hpp>

namespace spark::gateway {

std::variant<config::Duration, std::string> parse_keep_awake_body(std::string_view body) {
  const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) return std::string("the body must be a JSON object like {\"for\": \"4h\"}");
  for (const auto& [key, value] : json.items())
    if (key != "for") return "unknown key \"" + key + "\"";
  if (!json.contains("for") || !json["for"].is_string())
    return std::string("\"for\" must be a duration string like \"4h\"");
  std::string why;
  const auto hold = config::parse_duration(json["for"].get<std::string>(), &why);
  if (!hold) return "\"for\": " + why;
  return *hold;
}

}  // namespace spark::gateway
