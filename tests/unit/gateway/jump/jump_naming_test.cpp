// The jump host's naming rules and authorized_keys parsing (docs/jump-host.md).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gateway/jump/authorized_keys.hpp"
#include "gateway/jump/jump_session.hpp"

namespace spark::gateway {
namespace {

TEST(SparkFromLogin, TheFirstLabelNamesTheSpark) {
  EXPECT_EQ(spark_from_login("brave-dolphin"), "brave-dolphin");
  EXPECT_EQ(spark_from_login("brave-dolphin.spark"), "brave-dolphin");
  EXPECT_EQ(spark_from_login("brave-dolphin.tailnet.ts.net"), "brave-dolphin");
}

TEST(SparkFromLogin, InvalidNamesAreRefused) {
  for (const char* bad : {"", ".spark", "Brave", "-dash", "under_score", "a/b", "x;rm -rf", "..", "a b"})
    EXPECT_EQ(spark_from_login(bad), std::nullopt) << bad;
}

TEST(ChannelReaches, OnlyTheLoginsSparkOnItsPorts) {
  EXPECT_TRUE(channel_reaches("brave-dolphin", "brave-dolphin", 22, 2222));
  EXPECT_TRUE(channel_reaches("brave-dolphin", "brave-dolphin.spark", 2222, 2222));
  EXPECT_FALSE(channel_reaches("brave-dolphin", "brave-dolphin", 9090, 2222));
  EXPECT_FALSE(channel_reaches("brave-dolphin", "calm-otter", 22, 2222));
  EXPECT_FALSE(channel_reaches("brave-dolphin", "127.0.0.1", 22, 2222));
  EXPECT_FALSE(channel_reaches("brave-dolphin", "brave-dolphinx", 22, 2222));
  EXPECT_FALSE(channel_reaches("brave-dolphin", "", 22, 2222));
}

class AuthorizedKeysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/jump-keys-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    for (const char* name : {"a", "b"}) {
      const auto cmd = "ssh-keygen -q -t ed25519 -N '' -C test -f " + (dir_ / name).string();
      ASSERT_EQ(std::system(cmd.c_str()), 0);
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string pub(const char* name) {
    std::ifstream in(dir_ / (std::string(name) + ".pub"));
    std::string line;
    std::getline(in, line);
    return line;
  }
  KeyPtr key(const char* name) {
    ssh_key k = nullptr;
    EXPECT_EQ(ssh_pki_import_pubkey_file((dir_ / (std::string(name) + ".pub")).c_str(), &k), SSH_OK);
    return KeyPtr(k);
  }
  std::filesystem::path write(const std::string& text) {
    const auto p = dir_ / "authorized_keys";
    std::ofstream(p) << text;
    return p;
  }
  std::filesystem::path dir_;
};

TEST_F(AuthorizedKeysTest, KeysCommentsAndBrokenLines) {
  const auto list = KeyList::load(write("# comment\n\n" + pub("a") + "\nssh-ed25519 not-base64 x\n"
                                        "command=\"/bin/sh\" " + pub("b") + "\n"));
  EXPECT_EQ(list.size(), 1u);
  EXPECT_TRUE(list.contains(key("a").get()));
  EXPECT_FALSE(list.contains(key("b").get())) << "a line with options must not grant access";
}

TEST_F(AuthorizedKeysTest, GlobalAndPerSparkLists) {
  config::JumpConfig cfg;
  cfg.authorized_keys = write(pub("a") + "\n");
  const auto per_spark = dir_ / "b-only";
  std::ofstream(per_spark) << pub("b") << "\n";
  cfg.spark_authorized_keys["open-owl"] = per_spark;
  const auto access = JumpAccess::load(cfg);
  EXPECT_TRUE(access.allows(key("a").get(), "open-owl"));
  EXPECT_TRUE(access.allows(key("a").get(), "closed-cat"));
  EXPECT_TRUE(access.allows(key("b").get(), "open-owl"));
  EXPECT_FALSE(access.allows(key("b").get(), "closed-cat"));
}

TEST_F(AuthorizedKeysTest, UnreadableFileIsAClearError) {
  try {
    KeyList::load(dir_ / "missing");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot read authorized keys"), std::string::npos);
  }
}

}  // namespace
}  // namespace spark::gateway
