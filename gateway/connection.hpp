#pragma once
// One client connection through a spark's listener: wait for the spark, splice, account (the
// accounting is the session core's, shared with jump sessions).
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "gateway/asio.hpp"
#include "gateway/client_greeting.hpp"
#include "gateway/data_plane.hpp"
#include "gateway/session_core.hpp"
#include "gateway/spark.hpp"
#include "gateway/splice.hpp"

namespace spark::gateway {

class Connection final : public std::enable_shared_from_this<Connection>, public LiveSession {
 public:
  // `client` was accepted onto `worker`'s io_context and admitted by `sessions`; run() itself
  // runs on the main loop.
  // `port`: the dev port it came in on (none: the spark's SSH port).
  Connection(std::shared_ptr<Spark> spark, std::optional<config::SparkPort> port, tcp::socket client,
             tcp::endpoint peer, SessionCore& sessions, DataWorker& worker);

  // Waits for the spark and connects to it, then hands the pair to the worker and returns:
  // the splice ends the connection on its own (finish()). A failure ends it here.
  awaitable<void> run();
  void force_close() override;

 private:
  // Reads what the client says before its spark is woken (client_greeting.hpp).
  awaitable<Greeting> read_client_greeting();
  // Closes a connection that must not wake its spark: counted and logged (rate-limited).
  void turn_away(const Greeting& greeting);
  void start_splice(asio::any_io_executor main);
  void close_sockets();
  void finish(std::string_view outcome, std::optional<ConnectionEnd> end);  // main loop, once

  // The bytes counters: the spark's (SSH) or the dev port's.
  prometheus::Counter& bytes_in_counter() const;
  prometheus::Counter& bytes_out_counter() const;
  void count_spliced();
  // " to port web" for a dev port's log lines; empty for SSH.
  std::string port_words() const;

  std::optional<config::SparkPort> port_;
  PortMetrics* port_metrics_ = nullptr;  // set for a dev port
  tcp::socket client_;
  std::optional<tcp::socket> upstream_;
  tcp::endpoint peer_;
  SessionCore& sessions_;
  DataWorker& worker_;
  std::chrono::steady_clock::time_point opened_;
  config::TcpKeepalive keepalive_;  // as set on both sockets
  bool on_worker_ = false;          // the sockets now belong to worker_'s thread
  // Bytes moved, for the close's log line (main loop: the splice returns its counts home).
  std::uint64_t bytes_in_ = 0, bytes_out_ = 0;
};

}  // namespace spark::gateway
