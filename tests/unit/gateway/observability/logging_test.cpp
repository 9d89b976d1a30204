// Unit tests for gateway/observability/logging.hpp: text-mode lines cannot be forged or turned
// into terminal escapes by strings from outside (issue 17), and the JSON escaper.
#include "gateway/observability/logging.hpp"

#include <gtest/gtest.h>
#include <spdlog/details/log_msg.h>

#include <string>

namespace spark::gateway {
namespace {

std::string text_line(std::string_view message) {
  const auto formatter = make_text_formatter();
  const spdlog::details::log_msg msg(spdlog::source_loc{}, "spark-gateway", spdlog::level::warn,
                                     spdlog::string_view_t(message.data(), message.size()));
  spdlog::memory_buf_t out;
  formatter->format(msg, out);
  return std::string(out.data(), out.size());
}

TEST(EscapeControlCharacters, PrintableTextIsUnchanged) {
  for (const char* text : {"", "spark brave-dolphin: ready in 60ms", "C:\\path \\n stays literal",
                           "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\xac"}) {
    EXPECT_EQ(escape_control_characters(text), text);
  }
}

TEST(EscapeControlCharacters, LineBreaksAndTabsAreNamed) {
  EXPECT_EQ(escape_control_characters("a\nb\rc\td"), "a\\nb\\rc\\td");
}

TEST(EscapeControlCharacters, OtherControlsAreHex) {
  EXPECT_EQ(escape_control_characters("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
  EXPECT_EQ(escape_control_characters(std::string("nul\0bel\a del\x7f", 13)), "nul\\x00bel\\x07 del\\x7f");
}

TEST(EscapeControlCharacters, InvalidUtf8IsHex) {
  EXPECT_EQ(escape_control_characters("\xff\xfe"), "\\xff\\xfe");
  EXPECT_EQ(escape_control_characters("\x9b" "31m"), "\\x9b31m");       // a raw 8-bit CSI
  EXPECT_EQ(escape_control_characters("\xc0\x8a"), "\\xc0\\x8a");        // an overlong newline
  EXPECT_EQ(escape_control_characters("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
  EXPECT_EQ(escape_control_characters("end\xe2\x82"), "end\\xe2\\x82");  // cut short
}

TEST(EscapeControlCharacters, C1ControlsSeparatorsAndBidiOverridesAreEscaped) {
  EXPECT_EQ(escape_control_characters("\xc2\x9b" "31m"), "\\u009b31m");  // CSI as UTF-8
  EXPECT_EQ(escape_control_characters("a\xc2\x85" "b"), "a\\u0085b");    // NEL
  EXPECT_EQ(escape_control_characters("a\xe2\x80\xa8" "b"), "a\\u2028b");
  EXPECT_EQ(escape_control_characters("user\xe2\x80\xae" "nimda"), "user\\u202enimda");
}

TEST(TextFormat, AForgedLineStaysOnTheLineItCameIn) {
  const std::string user = "x\n2026-11-22T15:04:05.123+0000 info spark admin: jump login from 10.0.0.1";
  const std::string line = text_line("jump: login from 127.0.0.1 as \"" + user + "\": no such spark");
  ASSERT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
  EXPECT_NE(line.find("as \"x\\n2026-11-22T15:04:05.123+0000 info spark admin"), std::string::npos) << line;
  EXPECT_NE(line.find(" warning jump: login from"), std::string::npos) << line;
}

TEST(TextFormat, PlainMessagesAreWrittenAsIs) {
  const std::string line = text_line("spark brave-dolphin: ready in 60ms");
  EXPECT_NE(line.find(" warning spark brave-dolphin: ready in 60ms\n"), std::string::npos) << line;
}

TEST(JsonEscape, ControlCharactersAreEscaped) {
  EXPECT_EQ(json_escape("a\"b\\c\nd\x1b"), "a\\\"b\\\\c\\nd\\u001b");
}

}  // namespace
}  // namespace spark::gateway
