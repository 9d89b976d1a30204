#pragma once
// The standard process_* metrics every Prometheus client exports, read from /proc/self.
#include <prometheus/metric_family.h>

#include <vector>

namespace spark::gateway {

std::vector<prometheus::MetricFamily> process_metric_families();

}  // namespace spark::gateway
