#pragma once
// The exit statuses of `spark-gateway` and its commands, one set for all of them (scripts test
// them; docs/operations.md lists them).
namespace spark::gateway::exit_code {

inline constexpr int ok = 0;
inline constexpr int failed = 1;  // it ran and failed: an unreachable admin API, a refused request, a fatal error
inline constexpr int usage = 2;   // bad arguments or a bad config

}  // namespace spark::gateway::exit_code
