#pragma once
#include <chrono>
#include <vector>

#include <nlohmann/json.hpp>

#include "gateway/admin/gateway_control.hpp"
#include "gateway/observability/spark_status.hpp"

namespace spark::gateway {

// The API's JSON for a spark; field names are documented in docs/operations.md.
nlohmann::json to_json(const SparkStatus& s);

// A spark's history (GET /api/v1/sparks/NAME/history): its intervals (unknown gaps included,
// covering the last `window` up to now), wakes and spans of use in that window, and its totals
// over the last 24 hours and 7 days. Documented in docs/operations.md.
nlohmann::json history_to_json(const SparkHistoryView& view, std::chrono::hours window);

// The fleet's (GET /api/v1/history): the share of spark-hours slept over the last 24 hours and
// 7 days, and every spark's history as above.
nlohmann::json fleet_history_to_json(const std::vector<SparkHistoryView>& sparks, std::chrono::hours window);

}  // namespace spark::gateway
