// Unit tests for config/port_list.hpp: the dev ports of a Deployment's `spark-gateway/ports`
// annotation and of `kubernetes.ports`.
#include "config/port_list.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace spark::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(PortList, NamedAndNumberedPorts) {
  EXPECT_THAT(*parse_port_list("web=3000,api=8080"), ElementsAre(NamedPort{"web", 3000}, NamedPort{"api", 8080}));
  EXPECT_THAT(*parse_port_list("3000,8080"), ElementsAre(NamedPort{"3000", 3000}, NamedPort{"8080", 8080}));
  EXPECT_THAT(*parse_port_list(" web = 3000 , 5000 "),
              ElementsAre(NamedPort{"web", 3000}, NamedPort{"5000", 5000}));
}

TEST(PortList, EmptyIsNoPorts) {
  EXPECT_TRUE(parse_port_list("")->empty());
  EXPECT_TRUE(parse_port_list("  ")->empty());
}

TEST(PortList, EveryBadItemIsRefusedWithItsReason) {
  const auto why = [](std::string_view text) {
    std::string reason;
    EXPECT_FALSE(parse_port_list(text, &reason)) << text;
    return reason;
  };
  EXPECT_THAT(why("web=70000"), HasSubstr("\"web=70000\": 70000 is not a port"));
  EXPECT_THAT(why("web=0"), HasSubstr("0 is not a port"));
  EXPECT_THAT(why("web=http"), HasSubstr("http is not a port"));
  EXPECT_THAT(why("web=3000,"), HasSubstr("is not a port"));
  EXPECT_THAT(why("Web=3000"), HasSubstr("\"Web\" is not a port name"));
  EXPECT_THAT(why("ssh=2222"), HasSubstr("\"ssh\" is the SSH port's name"));
  EXPECT_THAT(why("web=3000,web=3001"), HasSubstr("the name web is given twice"));
  EXPECT_THAT(why("web=3000,api=3000"), HasSubstr("port 3000 is given twice"));
  EXPECT_THAT(why("3000,3000"), HasSubstr("given twice"));
  EXPECT_THAT(why(std::string(59, 'a') + "=3000"), HasSubstr("is longer than 58 characters"));
  EXPECT_TRUE(parse_port_list(std::string(58, 'a') + "=3000"));
}

}  // namespace
}  // namespace spark::config
