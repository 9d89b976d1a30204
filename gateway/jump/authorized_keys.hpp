#pragma once
// OpenSSH authorized_keys files for the jump host: which public keys may open which sparks.
#include <libssh/libssh.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace spark::gateway {

struct KeyDeleter {
  void operator()(ssh_key key) const { ssh_key_free(key); }
};
using KeyPtr = std::unique_ptr<std::remove_pointer_t<ssh_key>, KeyDeleter>;

// The public keys of one file. Lines are `[options] type base64 [comment]`; options are not
// supported (such a line is skipped with a warning: silently granting more than it says would
// be worse); blank lines and # comments are skipped. Throws std::runtime_error if unreadable.
class KeyList {
 public:
  static KeyList load(const std::filesystem::path& file);
  bool contains(ssh_key key) const;
  std::size_t size() const { return keys_.size(); }

 private:
  std::vector<KeyPtr> keys_;
};

// Who may open what: the global list plus each spark's own.
class JumpAccess {
 public:
  static JumpAccess load(const config::JumpConfig& cfg);
  bool allows(ssh_key key, const std::string& spark) const;

 private:
  std::shared_ptr<KeyList> everyone_;
  std::map<std::string, std::shared_ptr<KeyList>> per_spark_;
};

// "SHA256:..." as OpenSSH prints it.
std::string fingerprint(ssh_key key);

}  // namespace spark::gateway
