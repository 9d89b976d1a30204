#pragma once
// Persists activity to <state_dir>/activity.json so a restart neither resets idle clocks nor
// forgets them. Writes are atomic (temp file, fsync, rename) and the file is 0600.
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "activity/activity_tracker.hpp"

namespace spark::activity {

class ActivityStore {
 public:
  explicit ActivityStore(std::filesystem::path state_dir);

  const std::filesystem::path& file() const { return file_; }

  // Reads the persisted activity. A missing file is an empty snapshot. A corrupt file is moved
  // aside (activity.json.corrupt) so nothing is overwritten, and std::runtime_error says so.
  // Histories are the exception: a bad history entry is skipped with a warning (into
  // `warnings`, else the log) and the rest kept; a file from before histories loads without
  // them. Each history's current state ends at the moment the file was written ("saved_at"):
  // what happened while the gateway was down is unknown.
  ActivitySnapshot load(std::vector<std::string>* warnings = nullptr) const;

  // Writes atomically; throws std::runtime_error naming the path and errno text on failure
  // (the caller keeps the data in memory and retries). `saved_at` is recorded as the moment
  // the snapshot describes (the histories' current states go on at least until then).
  void save(const ActivitySnapshot& snapshot) const { save(snapshot, std::chrono::system_clock::now()); }
  void save(const ActivitySnapshot& snapshot, TimePoint saved_at) const;

 private:
  std::filesystem::path dir_;
  std::filesystem::path file_;
};

}  // namespace spark::activity
