// Unit tests for gateway/observability/rate_limited_log.hpp: a flood of refusals is one line at
// once and then one count per interval, not a line each (issue 17).
#include "gateway/observability/rate_limited_log.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace spark::gateway {
namespace {

using namespace std::chrono_literals;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr auto kInterval = 200ms;

struct Lines {
  std::mutex mu;
  std::vector<std::string> lines;
  RateLimitedLog::Sink sink() {
    return [this](const std::string& line) {
      std::lock_guard lock(mu);
      lines.push_back(line);
    };
  }
  std::vector<std::string> get() {
    std::lock_guard lock(mu);
    return lines;
  }
  // Waits (bounded) until there are `n` lines; returns them.
  std::vector<std::string> wait_for(std::size_t n, std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (get().size() < n && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
    return get();
  }
};

void refuse(RateLimitedLog& log, const std::string& spark, const std::string& from) {
  const std::string key = std::string("spark ").append(spark);  // not "spark " + s: GCC 12's false -Wrestrict
  log.record(key, key + ": refusing connection from " + from + ": full", "last from " + from + ": full");
}

TEST(WithThousandsSeparators, GroupsDigits) {
  EXPECT_EQ(with_thousands_separators(0), "0");
  EXPECT_EQ(with_thousands_separators(999), "999");
  EXPECT_EQ(with_thousands_separators(1000), "1,000");
  EXPECT_EQ(with_thousands_separators(1234567), "1,234,567");
}

TEST(RateLimitedLog, AFloodIsTheFirstLineAndOneCount) {
  Lines out;
  RateLimitedLog log("refused", "connection", kInterval, out.sink());
  for (int i = 0; i < 1000; ++i) refuse(log, "brave-dolphin", "10.0.0." + std::to_string(i % 250));
  // The first at once, in full; the rest only counted.
  EXPECT_THAT(out.get(), ElementsAre("spark brave-dolphin: refusing connection from 10.0.0.0: full"));
  const auto lines = out.wait_for(2);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1], "spark brave-dolphin: refused 1,000 connections in the last 200ms, last from 10.0.0.249: full");
  // Nothing more comes once the flood has stopped.
  std::this_thread::sleep_for(3 * kInterval);
  EXPECT_EQ(out.get().size(), 2u);
}

TEST(RateLimitedLog, ASingleRefusalIsOneLineAndAQuietKeyStartsOver) {
  Lines out;
  RateLimitedLog log("refused", "connection", kInterval, out.sink());
  refuse(log, "calm-otter", "10.0.0.1");
  std::this_thread::sleep_for(2 * kInterval + 50ms);  // its window ends with nothing to count
  EXPECT_EQ(out.get().size(), 1u);
  refuse(log, "calm-otter", "10.0.0.2");
  EXPECT_THAT(out.get(), ElementsAre(HasSubstr("refusing connection from 10.0.0.1"),
                                     HasSubstr("refusing connection from 10.0.0.2")));
}

TEST(RateLimitedLog, ASustainedFloodIsOneLinePerInterval) {
  Lines out;
  RateLimitedLog log("refused", "connection", kInterval, out.sink());
  const auto until = std::chrono::steady_clock::now() + 5 * kInterval;
  int sent = 0;
  while (std::chrono::steady_clock::now() < until) {
    refuse(log, "brave-dolphin", "10.0.0.1");
    ++sent;
    std::this_thread::sleep_for(1ms);
  }
  std::this_thread::sleep_for(2 * kInterval);
  const auto lines = out.get();
  // 1 immediate + about 5 counts (one per window), never one per refusal.
  EXPECT_GE(lines.size(), 4u);
  EXPECT_LE(lines.size(), 8u);
  EXPECT_LT(lines.size(), static_cast<std::size_t>(sent) / 10);
  std::uint64_t counted = 0;
  for (std::size_t i = 1; i < lines.size(); ++i) {
    EXPECT_THAT(lines[i], HasSubstr("spark brave-dolphin: refused "));
    EXPECT_THAT(lines[i], HasSubstr(" connections in the last 200ms, last from 10.0.0.1: full"));
    const auto start = lines[i].find("refused ") + 8;
    std::string n = lines[i].substr(start, lines[i].find(' ', start) - start);
    std::erase(n, ',');
    counted += std::stoull(n);
  }
  // Every refusal is in exactly one count (the first window's count includes the line written at once).
  EXPECT_EQ(counted, static_cast<std::uint64_t>(sent));
}

TEST(RateLimitedLog, KeysAreCountedApart) {
  Lines out;
  RateLimitedLog log("refused", "connection", kInterval, out.sink());
  for (int i = 0; i < 3; ++i) refuse(log, "brave-dolphin", "10.0.0.1");
  for (int i = 0; i < 5; ++i) refuse(log, "calm-otter", "10.0.0.2");
  auto lines = out.wait_for(4);
  std::sort(lines.begin(), lines.end());
  EXPECT_THAT(lines, ElementsAre(HasSubstr("spark brave-dolphin: refused 3 connections"),
                                 "spark brave-dolphin: refusing connection from 10.0.0.1: full",
                                 HasSubstr("spark calm-otter: refused 5 connections"),
                                 "spark calm-otter: refusing connection from 10.0.0.2: full"));
}

TEST(RateLimitedLog, ACountOfOneIsSingular) {
  Lines out;
  // Long windows: the third refusal must land in the second one, however slow the machine.
  RateLimitedLog log("refused", "connection", 1s, out.sink());
  refuse(log, "brave-dolphin", "10.0.0.1");
  refuse(log, "brave-dolphin", "10.0.0.1");
  ASSERT_EQ(out.wait_for(2, 10s).size(), 2u);  // the first in full, then "refused 2 connections"
  refuse(log, "brave-dolphin", "10.0.0.1");  // one in the next window
  const auto lines = out.wait_for(3, 10s);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_THAT(lines[1], HasSubstr("refused 2 connections in the last"));
  EXPECT_THAT(lines[2], HasSubstr("refused 1 connection in the last"));
}

TEST(RateLimitedLog, PendingCountsAreWrittenWhenItIsDestroyed) {
  Lines out;
  {
    RateLimitedLog log("refused", "connection", 1h, out.sink());
    for (int i = 0; i < 7; ++i) refuse(log, "brave-dolphin", "10.0.0.1");
  }
  const auto lines = out.get();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[1], HasSubstr("spark brave-dolphin: refused 7 connections in the last "));
}

TEST(RefusalLog, SharedByEveryPathWithTheDocumentedWords) {
  // The process-wide instance: one budget for TCP listeners and the jump host.
  EXPECT_EQ(&refusal_log(), &refusal_log());
  EXPECT_EQ(kRefusalLogInterval, 10s);
}

}  // namespace
}  // namespace spark::gateway
