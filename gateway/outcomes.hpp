#pragma once
// What happened to a connection or a spark, in the words the logs, the metrics' labels and the
// admin API share (docs/metrics.md). Domain vocabulary: metrics count these, they do not define them.
#include <chrono>
#include <string>
#include <string_view>

namespace spark::gateway {

// How a connection's attempt to reach its spark ended. `port_closed`: a dev port's connection
// to an awake spark whose port does not answer (its dev server is not running): not the spark's
// failure.
enum class ConnectionOutcome { spliced, wake_failed, upstream_failed, rejected, port_closed };

// How a spliced connection ended. `client_unreachable` / `spark_unreachable`: keepalive or
// TCP_USER_TIMEOUT found that side dead (no FIN or RST ever came; docs/dead-peers.md).
// `closed`: both sides finished; `error`: a reset or other socket error, or the gateway closed
// it (drain, forced sleep).
enum class ConnectionEnd { closed, error, client_unreachable, spark_unreachable };
std::string_view to_string(ConnectionEnd e);
// The close's words for a peer found dead, the same for TCP connections and jump sessions (the
// words docs/dead-peers.md promises operators): "closed: peer unreachable (keepalive): no
// answer from the client within 2m".
std::string unreachable_words(ConnectionEnd end, std::chrono::milliseconds keepalive_bound);

// Why a connection was closed before its spark was woken for it (issue 19): not a person's
// client. `closed_silent`: it left without sending a byte (a bare connect, a port scan);
// `not_ssh`: its first bytes are not an SSH identification; `proxy_local`: a proxy's own health
// check (PROXY LOCAL); `proxy_refused`: a PROXY header from an untrusted peer, none where one is
// required, or a broken one.
enum class TurnedAway { closed_silent, not_ssh, proxy_local, proxy_refused };
std::string_view to_string(TurnedAway t);

// Why a spark was put to sleep. `evicted`: idle, and put to sleep to make room for a wake
// waiting under limits.max_running.
enum class SleepReason { idle, api, shutdown, removed, evicted };
std::string_view to_string(SleepReason r);

}  // namespace spark::gateway
