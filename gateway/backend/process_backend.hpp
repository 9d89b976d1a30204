#pragma once
// `process` backend: the gateway runs the spark as its own child process (e.g. an sshd).
#include <filesystem>
#include <memory>
#include <mutex>

#include "config/config.hpp"
#include "gateway/backend/backend.hpp"
#include "gateway/backend/child_process.hpp"

namespace spark::gateway {

class ProcessBackend final : public Backend {
 public:
  ProcessBackend(std::string spark, config::ProcessBackendConfig cfg, std::filesystem::path cwd);
  ~ProcessBackend() override;

  std::string_view kind() const override { return "process"; }
  void wake(const WakeRequest& request) override;
  void sleep(const SleepRequest& request) override;
  Observation observe() const override;
  bool may_run_without_us() const override { return false; }

 private:
  std::string spark_;
  config::ProcessBackendConfig cfg_;
  std::filesystem::path cwd_;
  mutable std::mutex mu_;
  std::unique_ptr<ChildProcess> child_;
};

}  // namespace spark::gateway
