// Unit tests for activity/activity_store.hpp: persisting activity to <state_dir>/activity.json.
#include "activity/activity_store.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace spark::activity {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

// 2026-11-22T15:04:05Z
const TimePoint kT0{std::chrono::seconds(1'795'359'845)};

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << p;
}

// A fresh, empty directory per test under the GoogleTest temp dir.
class ActivityStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = fs::path(::testing::TempDir()) /
            (std::string("activity_store_test.") + std::to_string(::getpid()) + "." + info->name());
    fs::remove_all(root_);
    ASSERT_TRUE(fs::create_directories(root_));
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  fs::path root_;
};

// ---------------------------------------------------------------------------
// Round trip
// ---------------------------------------------------------------------------

TEST_F(ActivityStoreTest, SaveThenLoadRoundTrips) {
  const ActivitySnapshot snap{
      {"alpha", PersistedActivity{kT0 + 123ms, std::nullopt, {}, {}}},
      {"beta", PersistedActivity{kT0 - 3h, kT0 + 8h + 7ms, {}, {}}},
      {"gamma-2", PersistedActivity{TimePoint{}, std::nullopt, {}, {}}},
      {"delta", PersistedActivity{kT0, std::nullopt, "10.0.0.7 (jump login delta.alice, key SHA256:abc)", {}}},
  };
  ActivityStore store(root_);
  store.save(snap);
  EXPECT_EQ(ActivityStore(root_).load(), snap);
}

TEST_F(ActivityStoreTest, EmptySnapshotRoundTrips) {
  ActivityStore store(root_);
  store.save({});
  EXPECT_TRUE(fs::exists(store.file()));
  EXPECT_TRUE(store.load().empty());
}

TEST_F(ActivityStoreTest, SaveOverwritesPreviousContent) {
  ActivityStore store(root_);
  store.save({{"old", PersistedActivity{kT0, kT0 + 1h, {}, {}}}});
  const ActivitySnapshot newer{{"new", PersistedActivity{kT0 + 1s, std::nullopt, {}, {}}}};
  store.save(newer);
  EXPECT_EQ(store.load(), newer);
}

TEST_F(ActivityStoreTest, FileIsActivityJsonInStateDir) {
  ActivityStore store(root_);
  EXPECT_EQ(store.file(), root_ / "activity.json");
  store.save({{"a", PersistedActivity{kT0, std::nullopt, {}, {}}}});
  ASSERT_TRUE(fs::exists(root_ / "activity.json"));
  const auto text = read_text(root_ / "activity.json");
  EXPECT_THAT(text, HasSubstr("2026-11-22T15:04:05.000Z"));
  EXPECT_THAT(text, HasSubstr("\"a\""));
}

TEST_F(ActivityStoreTest, LoadsHandWrittenFileWithOffsetsAndMissingKeepAwake) {
  write_text(root_ / "activity.json", R"({
    "version": 1,
    "sparks": {
      "a": {"last_activity": "2026-11-22T17:04:05+02:00"},
      "b": {"last_activity": "2026-11-22T15:04:05Z", "keep_awake_until": null},
      "c": {"last_activity": "2026-11-22T15:04:05Z", "keep_awake_until": "2026-11-22T16:04:05.500Z"}
    }
  })");
  const auto snap = ActivityStore(root_).load();
  ASSERT_EQ(snap.size(), 3u);
  EXPECT_EQ(snap.at("a"), (PersistedActivity{kT0, std::nullopt, {}, {}}));
  EXPECT_EQ(snap.at("b"), (PersistedActivity{kT0, std::nullopt, {}, {}}));
  EXPECT_EQ(snap.at("c"), (PersistedActivity{kT0, kT0 + 1h + 500ms, {}, {}}));
}

// ---------------------------------------------------------------------------
// File mode, directory creation, temp file
// ---------------------------------------------------------------------------

TEST_F(ActivityStoreTest, FileIsMode0600) {
  ActivityStore store(root_);
  store.save({{"a", PersistedActivity{kT0, std::nullopt, {}, {}}}});
  struct stat st {};
  ASSERT_EQ(::stat(store.file().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u) << std::oct << (st.st_mode & 07777);
}

TEST_F(ActivityStoreTest, FileStaysMode0600AfterOverwrite) {
  ActivityStore store(root_);
  store.save({{"a", PersistedActivity{kT0, std::nullopt, {}, {}}}});
  store.save({{"a", PersistedActivity{kT0 + 1s, std::nullopt, {}, {}}}});
  struct stat st {};
  ASSERT_EQ(::stat(store.file().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u) << std::oct << (st.st_mode & 07777);
}

TEST_F(ActivityStoreTest, SaveCreatesMissingStateDir) {
  const fs::path dir = root_ / "nested" / "state";
  ASSERT_FALSE(fs::exists(dir));
  const ActivitySnapshot snap{{"a", PersistedActivity{kT0, kT0 + 1h, {}, {}}}};
  ActivityStore store(dir);
  store.save(snap);
  EXPECT_TRUE(fs::is_directory(dir));
  EXPECT_TRUE(fs::is_regular_file(dir / "activity.json"));
  EXPECT_EQ(store.load(), snap);
}

TEST_F(ActivityStoreTest, NoTempFileLeftAfterSuccessfulSave) {
  ActivityStore store(root_);
  store.save({{"a", PersistedActivity{kT0, std::nullopt, {}, {}}}});
  store.save({{"a", PersistedActivity{kT0 + 1s, std::nullopt, {}, {}}}});
  EXPECT_FALSE(fs::exists(root_ / "activity.json.tmp"));
  // Nothing but the file itself in the state dir.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(root_)) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "activity.json");
  }
  EXPECT_EQ(entries, 1);
}

// ---------------------------------------------------------------------------
// Missing and corrupt files
// ---------------------------------------------------------------------------

TEST_F(ActivityStoreTest, MissingFileLoadsAsEmpty) { EXPECT_TRUE(ActivityStore(root_).load().empty()); }

TEST_F(ActivityStoreTest, MissingStateDirLoadsAsEmpty) {
  EXPECT_TRUE(ActivityStore(root_ / "does-not-exist").load().empty());
}

void expect_moved_aside(const fs::path& dir, const std::string& content) {
  const fs::path file = dir / "activity.json";
  const fs::path aside = dir / "activity.json.corrupt";
  ActivityStore store(dir);
  try {
    store.load();
    ADD_FAILURE() << "load() of a corrupt file did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr(file.string()));
    EXPECT_THAT(e.what(), HasSubstr("activity.json.corrupt"));
  }
  EXPECT_FALSE(fs::exists(file)) << "corrupt file was left in place";
  ASSERT_TRUE(fs::exists(aside)) << "corrupt file was not moved aside";
  EXPECT_EQ(read_text(aside), content) << "the corrupt content was not preserved";
  // After moving it aside, the next load starts empty instead of failing again.
  EXPECT_TRUE(store.load().empty());
}

TEST_F(ActivityStoreTest, CorruptJsonIsMovedAsideAndThrows) {
  const std::string junk = "{ this is not json \x01\x02";
  write_text(root_ / "activity.json", junk);
  expect_moved_aside(root_, junk);
}

TEST_F(ActivityStoreTest, MissingSparksKeyIsCorrupt) {
  const std::string text = R"({"version": 1})";
  write_text(root_ / "activity.json", text);
  expect_moved_aside(root_, text);
}

TEST_F(ActivityStoreTest, BadTimestampIsCorrupt) {
  const std::string text =
      R"({"version": 1, "sparks": {"a": {"last_activity": "yesterday", "keep_awake_until": null}}})";
  write_text(root_ / "activity.json", text);
  expect_moved_aside(root_, text);
}

TEST_F(ActivityStoreTest, BadKeepAwakeIsCorrupt) {
  const std::string text =
      R"({"version": 1, "sparks": {"a": {"last_activity": "2026-11-22T15:04:05Z", "keep_awake_until": 42}}})";
  write_text(root_ / "activity.json", text);
  expect_moved_aside(root_, text);
}

TEST_F(ActivityStoreTest, EmptyFileIsCorrupt) {
  write_text(root_ / "activity.json", "");
  expect_moved_aside(root_, "");
}

TEST_F(ActivityStoreTest, SaveAfterCorruptLoadDoesNotTouchTheCorruptCopy) {
  const std::string junk = "garbage";
  write_text(root_ / "activity.json", junk);
  ActivityStore store(root_);
  EXPECT_THROW(store.load(), std::runtime_error);
  const ActivitySnapshot snap{{"a", PersistedActivity{kT0, std::nullopt, {}, {}}}};
  store.save(snap);
  EXPECT_EQ(store.load(), snap);
  EXPECT_EQ(read_text(root_ / "activity.json.corrupt"), junk);
}

// ---------------------------------------------------------------------------
// Write failures
// ---------------------------------------------------------------------------

TEST_F(ActivityStoreTest, SaveIntoUnwritableLocationThrowsNamingThePath) {
  const fs::path blocker = root_ / "not-a-dir";
  write_text(blocker, "a regular file");
  const fs::path dir = blocker / "state";
  ActivityStore store(dir);
  try {
    store.save({{"a", PersistedActivity{kT0, std::nullopt, {}, {}}}});
    ADD_FAILURE() << "save() under a regular file did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr(dir.string()));
  }
  EXPECT_EQ(read_text(blocker), "a regular file");
}

TEST_F(ActivityStoreTest, SaveWhenStateDirIsARegularFileThrowsNamingThePath) {
  const fs::path dir = root_ / "state";
  write_text(dir, "not a dir");
  ActivityStore store(dir);
  try {
    store.save({{"a", PersistedActivity{kT0, std::nullopt, {}, {}}}});
    ADD_FAILURE() << "save() into a regular file did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr(dir.string()));
  }
  EXPECT_EQ(read_text(dir), "not a dir");
}

TEST_F(ActivityStoreTest, FailedRenameLeavesNoTempFileAndKeepsOldData) {
  // activity.json is a non-empty directory: rename(tmp, file) fails.
  ActivityStore store(root_);
  fs::create_directories(root_ / "activity.json" / "occupied");
  try {
    store.save({{"a", PersistedActivity{kT0, std::nullopt, {}, {}}}});
    ADD_FAILURE() << "save() onto a directory did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr((root_ / "activity.json").string()));
  }
  EXPECT_FALSE(fs::exists(root_ / "activity.json.tmp"));
  EXPECT_TRUE(fs::is_directory(root_ / "activity.json" / "occupied"));
}

// ---------------------------------------------------------------------------
// Histories (issue 21)
// ---------------------------------------------------------------------------

// A history with a bit of everything, in whole milliseconds (the file's precision).
SparkHistory sample_history() {
  SparkHistory h;
  h.begin_if_unknown(kT0, false);
  h.record_wake(kT0 + 1h, "a connection from 100.101.102.103");
  h.record_state(kT0 + 1h, true);
  h.in_use_began(kT0 + 1h + 200ms);
  h.in_use_ended(kT0 + 2h);
  h.record_state(kT0 + 3h, false);
  h.record_wake(kT0 + 4h, "an operator (admin API)");
  h.record_state(kT0 + 4h, true);
  h.in_use_began(kT0 + 4h + 1s);
  return h;
}

TEST_F(ActivityStoreTest, HistoryRoundTripsWithWhatWasGoingOnEndedWhenTheFileWasWritten) {
  ActivitySnapshot snap{{"a", PersistedActivity{kT0, std::nullopt, {}, sample_history()}}};
  ActivityStore store(root_);
  store.save(snap, kT0 + 5h);
  std::vector<std::string> warnings;
  const auto loaded = store.load(&warnings);
  EXPECT_TRUE(warnings.empty()) << warnings.front();
  SparkHistory expected = sample_history();
  expected.close(kT0 + 5h);
  EXPECT_EQ(loaded.at("a").history, expected);
  EXPECT_FALSE(loaded.at("a").history.current());
  EXPECT_EQ(loaded.at("a").history.intervals().back(), (StateInterval{kT0 + 4h, kT0 + 5h, true}));
  EXPECT_EQ(loaded.at("a").history.in_use().back(), (TimeSpan{kT0 + 4h + 1s, kT0 + 5h}));
  EXPECT_THAT(read_text(store.file()), HasSubstr("\"saved_at\": \"2026-11-22T20:04:05.000Z\""));
}

TEST_F(ActivityStoreTest, AFileFromBeforeHistoriesLoadsWithEmptyOnes) {
  write_text(root_ / "activity.json", R"({"version": 1, "sparks": {
      "a": {"last_activity": "2026-11-22T15:04:05Z", "keep_awake_until": null, "last_client": "10.0.0.1"}}})");
  std::vector<std::string> warnings;
  const auto snap = ActivityStore(root_).load(&warnings);
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(snap.at("a"), (PersistedActivity{kT0, std::nullopt, "10.0.0.1", {}}));
}

TEST_F(ActivityStoreTest, BadHistoryEntriesAreSkippedWithAWarningAndTheRestKept) {
  write_text(root_ / "activity.json", R"({"version": 1, "saved_at": "2026-11-22T20:04:05Z", "sparks": {
      "a": {"last_activity": "2026-11-22T15:04:05Z", "last_client": "10.0.0.1", "history": {
        "intervals": [
          {"from": "2026-11-22T15:04:05Z", "to": "2026-11-22T16:04:05Z", "state": "asleep"},
          {"from": "yesterday", "to": "2026-11-22T17:04:05Z", "state": "awake"},
          {"from": "2026-11-22T16:04:05Z", "to": "2026-11-22T17:04:05Z", "state": "dozing"},
          {"from": "2026-11-22T16:04:05Z", "to": "2026-11-22T17:04:05Z", "state": "awake"}
        ],
        "current": {"since": "2026-11-22T18:04:05Z", "state": "asleep"},
        "wakes": [42, {"at": "2026-11-22T16:04:05Z", "cause": "a connection from 10.0.0.1"}],
        "in_use": "all the time"
      }},
      "b": {"last_activity": "2026-11-22T15:04:05Z", "history": ["not", "an", "object"]}}})");
  std::vector<std::string> warnings;
  const auto snap = ActivityStore(root_).load(&warnings);
  ASSERT_EQ(snap.size(), 2u);  // the file is not "corrupt": nothing moved aside
  EXPECT_FALSE(fs::exists(root_ / "activity.json.corrupt"));
  EXPECT_EQ(snap.at("a").last_activity, kT0);
  EXPECT_EQ(snap.at("a").last_client, "10.0.0.1");
  const auto& h = snap.at("a").history;
  ASSERT_EQ(h.intervals().size(), 3u);  // two good ones, and the current state closed at saved_at
  EXPECT_EQ(h.intervals()[0], (StateInterval{kT0, kT0 + 1h, false}));
  EXPECT_EQ(h.intervals()[1], (StateInterval{kT0 + 1h, kT0 + 2h, true}));
  EXPECT_EQ(h.intervals()[2], (StateInterval{kT0 + 3h, kT0 + 5h, false}));
  ASSERT_EQ(h.wakes().size(), 1u);
  EXPECT_TRUE(snap.at("b").history.empty());
  // One clear line per skipped entry, naming the spark and the entry.
  ASSERT_EQ(warnings.size(), 5u);
  EXPECT_THAT(warnings[0], HasSubstr("spark a: history.intervals[1] skipped: bad from time \"yesterday\""));
  EXPECT_THAT(warnings[1], HasSubstr("spark a: history.intervals[2] skipped"));
  EXPECT_THAT(warnings[1], HasSubstr("neither \"awake\" nor \"asleep\""));
  EXPECT_THAT(warnings[2], HasSubstr("spark a: history.wakes[0] skipped: not an object"));
  EXPECT_THAT(warnings[3], HasSubstr("spark a: history.in_use skipped: not a list"));
  EXPECT_THAT(warnings[4], HasSubstr("spark b: history skipped: not an object"));
}

TEST_F(ActivityStoreTest, ACurrentStateWithoutSavedAtIsDroppedNotGuessed) {
  write_text(root_ / "activity.json", R"({"version": 1, "sparks": {
      "a": {"last_activity": "2026-11-22T15:04:05Z", "history": {
        "intervals": [{"from": "2026-11-22T15:04:05Z", "to": "2026-11-22T16:04:05Z", "state": "asleep"}],
        "current": {"since": "2026-11-22T16:04:05Z", "state": "awake"}}}}})");
  std::vector<std::string> warnings;
  const auto snap = ActivityStore(root_).load(&warnings);
  const auto& h = snap.at("a").history;
  EXPECT_FALSE(h.current());
  ASSERT_EQ(h.intervals().size(), 1u);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("no saved_at"));
}

}  // namespace
}  // namespace spark::activity
