#pragma once
// The control bridge: how the threads outside the main loop reach sparks. The admin API
// (GatewayControl, HTTP threads) and the jump host (JumpGateway, libssh threads) call in from
// their own threads; every call hops onto the main loop, where sparks live, and the answer
// comes back (the admin thread waits for it, bounded; the jump host gets a handoff). Jump
// sessions go through the same session core as TCP connections.
#include <atomic>
#include <functional>
#include <map>
#include <memory>

#include "activity/activity_tracker.hpp"
#include "gateway/activity_flusher.hpp"
#include "gateway/admin/gateway_control.hpp"
#include "gateway/asio.hpp"
#include "gateway/jump/jump_gateway.hpp"
#include "gateway/session_core.hpp"
#include "gateway/spark_set.hpp"

namespace spark::gateway {

class ControlBridge final : public GatewayControl, public JumpGateway {
 public:
  struct Parts {
    asio::io_context& main;
    SparkSet& sparks;
    SessionCore& sessions;
    activity::ActivityTracker& activity;
    ActivityFlusher& flusher;
    // Answered on the caller's thread at once (atomics): see GatewayControl::ready().
    std::function<bool()> ready;
    std::function<bool()> leads;
  };
  explicit ControlBridge(Parts parts);
  ~ControlBridge() override;

  // GatewayControl
  std::vector<SparkStatus> sparks() override;
  std::optional<SparkStatus> spark(const std::string& name) override;
  std::optional<SparkHistoryView> history(const std::string& name) override;
  std::vector<SparkHistoryView> histories() override;
  ControlOutcome wake(const std::string& name, bool wait) override;
  ControlOutcome sleep(const std::string& name, bool force) override;
  ControlOutcome keep_awake(const std::string& name, std::optional<config::Duration> hold) override;
  bool ready() override { return p_.ready(); }
  bool leads_reaper() override { return p_.leads(); }

  // JumpGateway
  std::optional<SparkInfo> find_spark(const std::string& name) override;
  void find_spark_async(const std::string& name, std::function<void(std::optional<SparkInfo>)> done) override;
  void connect_upstream(const std::string& name, const std::string& peer,
                        std::shared_ptr<UpstreamHandoff> handoff) override;
  void upstream_ended(std::shared_ptr<UpstreamHandoff> handoff, std::uint64_t client_to_spark,
                      std::uint64_t spark_to_client, ConnectionEnd end) override;

 private:
  class JumpSession;
  // Runs `f` on the main loop and returns its result to the calling (admin) thread.
  template <typename F>
  auto on_main_loop(F f) -> decltype(f());
  std::optional<SparkInfo> spark_info(const std::string& name) const;  // main loop
  awaitable<void> jump_connect(std::shared_ptr<Spark> spark, std::string peer,
                               std::shared_ptr<UpstreamHandoff> handoff);
  // Keeps the session's progress lines told where its spark's wake stands in line.
  awaitable<void> tell_place_in_line(std::shared_ptr<Spark> spark, std::shared_ptr<UpstreamHandoff> handoff);

  Parts p_;
  // Jump sessions admitted, by the handoff that carries their upstream (main loop).
  std::map<const UpstreamHandoff*, std::unique_ptr<JumpSession>> jump_sessions_;
};

}  // namespace spark::gateway
