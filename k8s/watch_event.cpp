#include "k8s/watch_event.hpp"

#include <stdexcept>

namespace spark::k8s {

using nlohmann::json;

WatchEvent parse_watch_event(std::string_view line) {
  const json event = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (event.is_discarded()) throw std::invalid_argument("not JSON");
  if (!event.is_object()) throw std::invalid_argument("not a JSON object");
  const auto type = event.find("type");
  const auto object = event.find("object");
  if (type == event.end() || !type->is_string()) throw std::invalid_argument("no \"type\" string");
  if (object == event.end() || !object->is_object()) throw std::invalid_argument("no \"object\" object");
  return WatchEvent{type->get<std::string>(), *object};
}

std::string WatchEvent::resource_version() const {
  const auto metadata = object.find("metadata");
  if (metadata == object.end() || !metadata->is_object()) return {};
  const auto rv = metadata->find("resourceVersion");
  return rv != metadata->end() && rv->is_string() ? rv->get<std::string>() : std::string();
}

}  // namespace spark::k8s
