#pragma once
// Persists activity to <state_dir>/activity.json so a restart neither resets idle clocks nor
// forgets them. Writes are atomic (temp file, fsync, rename) and the file is 0600.
#include <filesystem>

#include "activity/activity_tracker.hpp"

namespace spark::activity {

class ActivityStore {
 public:
  explicit ActivityStore(std::filesystem::path state_dir);

  const std::filesystem::path& file() const { return file_; }

  // Reads the persisted activity. A missing file is an empty snapshot. A corrupt file is moved
  // aside (activity.json.corrupt) so nothing is overwritten, and std::runtime_error says so.
  ActivitySnapshot load() const;

  // Writes atomically; throws std::runtime_error naming the path and errno text on failure
  // (the caller keeps the data in memory and retries).
  void save(const ActivitySnapshot& snapshot) const;

 private:
  std::filesystem::path dir_;
  std::filesystem::path file_;
};

}  // namespace spark::activity
