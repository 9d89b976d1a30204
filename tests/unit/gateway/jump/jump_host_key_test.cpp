// Unit tests for the jump host's generated host key (gateway/jump/jump_server.hpp): written
// whole or not at all, 0600, and a bad one left by an earlier start is replaced (issue 17).
#include "gateway/jump/jump_server.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace spark::gateway {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class GeneratedHostKey : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/jump-host-key-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    key_ = dir_ / "state" / "jump_host_ed25519_key";
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::string read(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static bool loads(const fs::path& file) {
    ssh_key key = nullptr;
    const bool ok = ssh_pki_import_privkey_file(file.c_str(), nullptr, nullptr, nullptr, &key) == SSH_OK;
    ssh_key_free(key);
    return ok;
  }
  static unsigned mode_of(const fs::path& file) {
    struct stat st{};
    ::stat(file.c_str(), &st);
    return st.st_mode & 07777;
  }

  fs::path dir_;
  fs::path key_;
};

TEST_F(GeneratedHostKey, IsMadeOnceWithMode0600AndNoTempFileLeft) {
  ensure_generated_host_key(key_);
  ASSERT_TRUE(loads(key_));
  EXPECT_EQ(mode_of(key_), 0600u);
  EXPECT_THAT(read(key_), HasSubstr("-----BEGIN OPENSSH PRIVATE KEY-----"));
  EXPECT_FALSE(fs::exists(key_.string() + ".tmp"));
  const std::string first = read(key_);
  ensure_generated_host_key(key_);  // a later start keeps it
  EXPECT_EQ(read(key_), first);
}

TEST_F(GeneratedHostKey, AnEmptyKeyIsReplaced) {
  fs::create_directories(key_.parent_path());
  std::ofstream(key_).close();  // what a full disk used to leave
  ASSERT_EQ(fs::file_size(key_), 0u);
  ensure_generated_host_key(key_);
  EXPECT_TRUE(loads(key_));
  EXPECT_EQ(mode_of(key_), 0600u);
}

TEST_F(GeneratedHostKey, AGarbledKeyIsReplaced) {
  fs::create_directories(key_.parent_path());
  std::ofstream(key_) << "-----BEGIN OPENSSH PRIVATE KEY-----\ntruncated";
  ensure_generated_host_key(key_);
  EXPECT_TRUE(loads(key_));
}

TEST_F(GeneratedHostKey, AStaleTempFileDoesNotMatter) {
  fs::create_directories(key_.parent_path());
  std::ofstream(key_.string() + ".tmp") << "left by a crash";
  fs::permissions(key_.string() + ".tmp", fs::perms::owner_read);
  ensure_generated_host_key(key_);
  EXPECT_TRUE(loads(key_));
  EXPECT_FALSE(fs::exists(key_.string() + ".tmp"));
}

TEST_F(GeneratedHostKey, WhenNoneCanBeWrittenTheErrorSaysWhatToDo) {
  // A directory where the temp file goes (unlink() cannot remove it): the write fails as on a
  // full disk or read-only directory, which root (CI) cannot simulate with permissions.
  fs::create_directories(key_.string() + ".tmp");
  std::ofstream(key_).close();
  try {
    ensure_generated_host_key(key_);
    FAIL() << "a key was written where none can be";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("host key " + key_.string() + " is unusable (it is empty"));
    EXPECT_THAT(e.what(), HasSubstr("cannot write a new host key"));
    EXPECT_THAT(e.what(), HasSubstr("set jump.host_keys to a key made with `ssh-keygen -t ed25519 -N '' -f"));
  }
  EXPECT_EQ(fs::file_size(key_), 0u) << "the old file is left as it was";
}

}  // namespace
}  // namespace spark::gateway
