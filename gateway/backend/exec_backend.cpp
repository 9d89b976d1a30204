#include "gateway/backend/exec_backend.hpp"

#include <spdlog/spdlog.h>

#include "config/duration.hpp"
#include "gateway/backend/child_process.hpp"

namespace spark::gateway {
namespace {
// A stop command gets this long; sleeping is never urgent, but it must not hang forever.
constexpr std::chrono::minutes kStopTimeout{5};
}  // namespace

ExecBackend::ExecBackend(std::string spark, config::ExecBackendConfig cfg, std::filesystem::path cwd)
    : spark_(std::move(spark)), cfg_(std::move(cfg)), cwd_(std::move(cwd)) {}

void ExecBackend::run(const std::vector<std::string>& argv, const char* what,
                      std::chrono::milliseconds timeout) const {
  std::unique_ptr<ChildProcess> child;
  try {
    child = std::make_unique<ChildProcess>(argv, cwd_, "spark " + spark_ + " " + what);
  } catch (const std::exception& e) {
    throw BackendError(std::string(what) + " command: " + e.what());
  }
  if (!child->wait_for_exit(timeout)) {
    child->terminate(std::chrono::seconds(2));
    throw BackendError(std::string(what) + " command " + argv[0] + " did not finish within " +
                       config::format_duration(timeout) + " and was killed");
  }
  const int status = *child->exit_status();
  if (status != 0) {
    std::string reason = std::string(what) + " command " + argv[0] + " " + describe_wait_status(status);
    if (auto out = child->recent_output(); !out.empty()) reason += ": " + out;
    throw BackendError(reason);
  }
}

void ExecBackend::wake(const WakeRequest& request) {
  run(cfg_.start, "start", request.timeout);
  started_ = true;
}

void ExecBackend::sleep(const SleepRequest&) {
  run(cfg_.stop, "stop", kStopTimeout);
  started_ = false;
}

Observation ExecBackend::observe() const {
  if (!started_) return {Observation::State::asleep, std::nullopt, {}};
  return {Observation::State::started, cfg_.target, {}};
}

}  // namespace spark::gateway
