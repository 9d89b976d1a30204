#pragma once
// One line of a watch stream: {"type": "ADDED|MODIFIED|DELETED|BOOKMARK|ERROR", "object": {...}}.
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace spark::k8s {

struct WatchEvent {
  std::string type;
  nlohmann::json object;  // always an object
  std::string resource_version() const;  // object.metadata.resourceVersion, or ""
};

// Throws std::invalid_argument saying what is wrong with a line that is not a watch event.
WatchEvent parse_watch_event(std::string_view line);

}  // namespace spark::k8s
