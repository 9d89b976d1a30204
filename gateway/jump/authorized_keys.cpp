#include "gateway/jump/authorized_keys.hpp"

#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace spark::gateway {

KeyList KeyList::load(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("jump: cannot read authorized keys " + file.string());
  KeyList out;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    std::istringstream words(line);
    std::string type, base64;
    if (!(words >> type) || type[0] == '#') continue;
    if (ssh_key_type_from_name(type.c_str()) == SSH_KEYTYPE_UNKNOWN) {
      spdlog::warn("jump: {}:{}: key options or an unknown key type (\"{}\"); line skipped", file.string(),
                   number, type.substr(0, 40));
      continue;
    }
    ssh_key key = nullptr;
    if (!(words >> base64) ||
        ssh_pki_import_pubkey_base64(base64.c_str(), ssh_key_type_from_name(type.c_str()), &key) != SSH_OK) {
      spdlog::warn("jump: {}:{}: not a valid {} public key; line skipped", file.string(), number, type);
      continue;
    }
    out.keys_.emplace_back(key);
  }
  return out;
}

bool KeyList::contains(ssh_key key) const {
  for (const auto& k : keys_)
    if (ssh_key_cmp(k.get(), key, SSH_KEY_CMP_PUBLIC) == 0) return true;
  return false;
}

JumpAccess JumpAccess::load(const config::JumpConfig& cfg) {
  JumpAccess out;
  if (cfg.authorized_keys) out.everyone_ = std::make_shared<KeyList>(KeyList::load(*cfg.authorized_keys));
  for (const auto& [spark, file] : cfg.spark_authorized_keys)
    out.per_spark_[spark] = std::make_shared<KeyList>(KeyList::load(file));
  return out;
}

bool JumpAccess::allows(ssh_key key, const std::string& spark) const {
  if (everyone_ && everyone_->contains(key)) return true;
  const auto it = per_spark_.find(spark);
  return it != per_spark_.end() && it->second->contains(key);
}

std::string fingerprint(ssh_key key) {
  unsigned char* hash = nullptr;
  size_t length = 0;
  if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &length) != SSH_OK) return "(unknown key)";
  char* text = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, length);
  ssh_clean_pubkey_hash(&hash);
  std::string out = text ? text : "(unknown key)";
  ssh_string_free_char(text);
  return out;
}

}  // namespace spark::gateway
