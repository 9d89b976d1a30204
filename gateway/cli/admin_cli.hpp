#pragma once
// The operator's commands (status, wake, sleep, keep-awake): thin clients of the admin API.
#include <string>
#include <vector>

namespace spark::gateway {

// True if `command` is one of the admin commands.
bool is_admin_command(const std::string& command);

// Runs it. Exit codes: 0 ok, 1 the operation failed (or the gateway could not be reached),
// 2 usage.
int run_admin_command(const std::string& command, const std::vector<std::string>& args);

// The usage text of the admin commands, for the binary's --help.
const char* admin_commands_usage();

}  // namespace spark::gateway
