#pragma once
// What happened to a connection or a spark, in the words the logs, the metrics' labels and the
// admin API share (docs/metrics.md). Domain vocabulary: metrics count these, they do not define them.
#include <string_view>

namespace spark::gateway {

// How a connection's attempt to reach its spark ended.
enum class ConnectionOutcome { spliced, wake_failed, upstream_failed, rejected };

// How a spliced connection ended. `client_unreachable` / `spark_unreachable`: keepalive or
// TCP_USER_TIMEOUT found that side dead (no FIN or RST ever came; docs/dead-peers.md).
// `closed`: both sides finished; `error`: a reset or other socket error, or the gateway closed
// it (drain, forced sleep).
enum class ConnectionEnd { closed, error, client_unreachable, spark_unreachable };
std::string_view to_string(ConnectionEnd e);

// Why a spark was put to sleep.
enum class SleepReason { idle, api, shutdown, removed };
std::string_view to_string(SleepReason r);

}  // namespace spark::gateway
