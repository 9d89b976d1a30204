// Unit tests for gateway/admin/request_head.hpp: the strict parsing the admin server does
// before it routes a request (percent-decoding, the bearer scheme, the Host and content-type
// rules of a tokenless loopback admin).
#include "gateway/admin/request_head.hpp"

#include <gtest/gtest.h>

namespace spark::gateway {
namespace {

TEST(PercentDecode, DecodesStrictly) {
  EXPECT_EQ(percent_decode("brave%2ddolphin", false), "brave-dolphin");
  EXPECT_EQ(percent_decode("%41%62", false), "Ab");
  EXPECT_EQ(percent_decode("%ff%fe", false), std::string("\xff\xfe"));
  EXPECT_EQ(percent_decode("a+b", false), "a+b");
  EXPECT_EQ(percent_decode("a+b", true), "a b");
  EXPECT_EQ(percent_decode("", false), "");
  for (const char* bad : {"%", "%2", "abc%", "%zz", "%g0", "%0g", "a%2"})
    EXPECT_EQ(percent_decode(bad, false), std::nullopt) << bad;
}

TEST(RequestTarget, SplitsThePathIntoDecodedSegments) {
  std::string why;
  auto t = parse_request_target("/api/v1/sparks/brave%2Ddolphin/wake?wait=true", &why);
  ASSERT_TRUE(t) << why;
  EXPECT_EQ(t->path, "/api/v1/sparks/brave%2Ddolphin/wake");
  EXPECT_EQ(t->segments, (std::vector<std::string>{"api", "v1", "sparks", "brave-dolphin", "wake"}));
  EXPECT_EQ(t->param("wait"), "true");
  EXPECT_EQ(t->param("force"), std::nullopt);

  EXPECT_EQ(parse_request_target("/", &why)->segments, std::vector<std::string>{""});
  EXPECT_EQ(parse_request_target("/api/v1/sparks/", &why)->segments,
            (std::vector<std::string>{"api", "v1", "sparks", ""}));
  // An encoded slash stays inside its segment (and makes an invalid name, not a new segment).
  EXPECT_EQ(parse_request_target("/api/v1/sparks/a%2Fb", &why)->segments,
            (std::vector<std::string>{"api", "v1", "sparks", "a/b"}));
}

TEST(RequestTarget, QueryParameters) {
  std::string why;
  auto t = parse_request_target("/x?wait&force=&a=1&a=2&&b=c%20d+e", &why);
  ASSERT_TRUE(t) << why;
  EXPECT_EQ(t->param("wait"), "");
  EXPECT_EQ(t->param("force"), "");
  EXPECT_EQ(t->param("a"), "1") << "the first value counts";
  EXPECT_EQ(t->param("b"), "c d e");
}

TEST(RequestTarget, RefusesWhatItCannotDecode) {
  std::string why;
  for (const char* bad : {"/api/v1/sparks/%ff%", "/api/v1/sparks/%zz", "/x?wait=%", "/x?%G1=1"}) {
    why.clear();
    EXPECT_FALSE(parse_request_target(bad, &why)) << bad;
    EXPECT_NE(why.find("percent-encoding"), std::string::npos) << why;
  }
  for (const char* bad : {"", "*", "http://example/api", "api/v1"}) {
    why.clear();
    EXPECT_FALSE(parse_request_target(bad, &why)) << bad;
    EXPECT_FALSE(why.empty());
  }
}

TEST(BearerCredentials, SchemeIsCaseInsensitive) {
  for (const char* value : {"Bearer t0k", "bearer t0k", "BEARER t0k", "bEaReR t0k", "Bearer   t0k"})
    EXPECT_EQ(bearer_credentials(value), "t0k") << value;
  for (const char* value : {"", "Bearer", "Bearer ", "Bearer    ", "Basic dXNlcg==", "Bearert0k", "Bearer\tt0k",
                            "Token t0k"})
    EXPECT_EQ(bearer_credentials(value), std::nullopt) << value;
  // Everything after the spaces is the credential (a token68 has no spaces: a mismatch).
  EXPECT_EQ(bearer_credentials("Bearer t0k x"), "t0k x");
}

TEST(LoopbackHost, OnlyNamesOfThisMachinesLoopback) {
  for (const char* host : {"localhost", "LOCALHOST", "localhost:9090", "localhost.", "127.0.0.1", "127.0.0.1:9090",
                           "127.31.7.9:1", "[::1]", "[::1]:9090", "[0:0:0:0:0:0:0:1]:80", "127.0.0.1:"})
    EXPECT_TRUE(is_loopback_host(host)) << host;
  for (const char* host : {"", "evil.example", "evil.example:9090", "localhost.evil.example", "127.0.0.1.nip.io",
                           "10.0.0.1", "0.0.0.0", "[::2]", "[::1", "[::1]x", "127.0.0.1:x", "::1",
                           "localhost:9090:1", "127.1", "2130706433"})
    EXPECT_FALSE(is_loopback_host(host)) << host;
}

TEST(JsonMediaType, OnlyApplicationJson) {
  for (const char* type : {"application/json", "Application/JSON", "application/json; charset=utf-8",
                           " application/json ;charset=utf-8"})
    EXPECT_TRUE(is_json_media_type(type)) << type;
  for (const char* type : {"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                           "text/json", "application/jsonx", "application/json-seq"})
    EXPECT_FALSE(is_json_media_type(type)) << type;
}

TEST(Printable, EscapesWhatCouldForgeALogLine) {
  EXPECT_EQ(printable("GET /x"), "GET /x");
  EXPECT_EQ(printable("a\r\nb\xff\\"), "a\\x0d\\x0ab\\xff\\x5c");
}

}  // namespace
}  // namespace spark::gateway
