#include "gateway/backend/make_backend.hpp"

#include "gateway/backend/exec_backend.hpp"
#include "gateway/backend/process_backend.hpp"

namespace spark::gateway {

std::unique_ptr<Backend> make_backend(const config::SparkConfig& spark, const config::Config& cfg) {
  if (const auto* p = std::get_if<config::ProcessBackendConfig>(&spark.backend))
    return std::make_unique<ProcessBackend>(spark.name, *p, cfg.base_dir);
  const auto& e = std::get<config::ExecBackendConfig>(spark.backend);
  return std::make_unique<ExecBackend>(spark.name, e, cfg.base_dir);
}

}  // namespace spark::gateway
