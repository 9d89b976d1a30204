#pragma once
// `exec` backend: user commands start and stop a spark that lives elsewhere (a systemd unit,
// a container, a VM). The commands run as argv, never through a shell.
#include <atomic>
#include <filesystem>

#include "config/config.hpp"
#include "gateway/backend/backend.hpp"

namespace spark::gateway {

class ExecBackend final : public Backend {
 public:
  ExecBackend(std::string spark, config::ExecBackendConfig cfg, std::filesystem::path cwd);

  std::string_view kind() const override { return "exec"; }
  void wake(const WakeRequest& request) override;
  void sleep(const SleepRequest& request) override;
  Observation observe() const override;
  bool may_run_without_us() const override { return true; }
  void adopt_running() override { started_ = true; }

 private:
  // Runs argv to completion; throws BackendError on a non-zero exit or after `timeout`.
  void run(const std::vector<std::string>& argv, const char* what,
           std::chrono::milliseconds timeout) const;

  std::string spark_;
  config::ExecBackendConfig cfg_;
  std::filesystem::path cwd_;
  std::atomic<bool> started_{false};
};

}  // namespace spark::gateway
