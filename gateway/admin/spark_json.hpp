#pragma once
#include <nlohmann/json.hpp>

#include "gateway/observability/spark_status.hpp"

namespace spark::gateway {

// The API's JSON for a spark; field names are documented in docs/operations.md.
nlohmann::json to_json(const SparkStatus& s);

}  // namespace spark::gateway
