#include "gateway/backend/process_backend.hpp"

#include <spdlog/spdlog.h>

namespace spark::gateway {

ProcessBackend::ProcessBackend(std::string spark, config::ProcessBackendConfig cfg,
                               std::filesystem::path cwd)
    : spark_(std::move(spark)), cfg_(std::move(cfg)), cwd_(std::move(cwd)) {}

ProcessBackend::~ProcessBackend() {
  // Children never outlive the gateway (PR_SET_PDEATHSIG covers a crash; this covers the rest).
  std::lock_guard lock(mu_);
  if (child_ && child_->running()) child_->terminate(cfg_.stop_grace);
}

void ProcessBackend::wake(const WakeRequest&) {
  std::unique_ptr<ChildProcess> old;
  std::lock_guard lock(mu_);
  if (child_ && child_->running()) return;  // already up: waking is idempotent
  old = std::move(child_);                  // a child that exited on its own: reaped below
  try {
    child_ = std::make_unique<ChildProcess>(cfg_.command, cwd_, "spark " + spark_);
  } catch (const std::exception& e) {
    throw BackendError(e.what());
  }
  spdlog::info("spark {}: started process pid {} ({})", spark_, child_->pid(), cfg_.command[0]);
}

void ProcessBackend::sleep(const SleepRequest&) {
  std::unique_ptr<ChildProcess> child;
  {
    std::lock_guard lock(mu_);
    child = std::move(child_);
  }
  if (!child) return;
  child->terminate(cfg_.stop_grace);
  spdlog::info("spark {}: process pid {} stopped ({})", spark_, child->pid(),
               describe_wait_status(child->exit_status().value_or(0)));
}

Observation ProcessBackend::observe() const {
  std::lock_guard lock(mu_);
  if (!child_) return {Observation::State::asleep, std::nullopt, {}};
  if (auto status = child_->exit_status()) {
    std::string reason = "process pid " + std::to_string(child_->pid()) + " " +
                         describe_wait_status(*status);
    if (auto out = child_->recent_output(); !out.empty()) reason += "; its last output: " + out;
    return {Observation::State::failed, std::nullopt, reason};
  }
  return {Observation::State::started, cfg_.target, {}};
}

}  // namespace spark::gateway
