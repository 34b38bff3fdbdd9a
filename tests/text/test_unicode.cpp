// The Unicode layer (src/text/unicode.hpp, internal) against Python's str.lower() and
// unicodedata: every code point that lowercases or (de)composes, thousands of random
// combining sequences (canonical reordering, composition blocking, Hangul), and the
// category flags of many code points.
#include <gtest/gtest.h>

#include "../../src/text/unicode.hpp"
#include "test_helpers.hpp"

namespace fstore {
namespace {

std::u32string u32(const nlohmann::json& j) { return unicode::decode_utf8(j.get<std::string>()); }

TEST(Unicode, MatchesPythonUnicodedata) {
    const auto dir = test::make_temp_dir("unicode");
    const auto ref = test::run_reference_driver("unicode", dir);
    ASSERT_GT(ref["singles"].size(), 3000u);
    for (const auto& s : ref["singles"]) {
        const char32_t cp = s[0].get<char32_t>();
        std::u32string lower;
        unicode::append_lower(cp, lower);
        const std::u32string one(1, cp);
        ASSERT_EQ(lower, u32(s[1])) << "lower U+" << std::hex << static_cast<unsigned>(cp);
        ASSERT_EQ(unicode::nfd(one), u32(s[2])) << "NFD U+" << std::hex << static_cast<unsigned>(cp);
        ASSERT_EQ(unicode::nfc(one), u32(s[3])) << "NFC U+" << std::hex << static_cast<unsigned>(cp);
    }
    for (const auto& s : ref["sequences"]) {
        const std::u32string text = u32(s[0]);
        ASSERT_EQ(unicode::nfd(text), u32(s[1])) << "NFD of " << s[0].dump();
        ASSERT_EQ(unicode::nfc(text), u32(s[2])) << "NFC of " << s[0].dump();
    }
    for (const auto& f : ref["flags"]) {
        ASSERT_EQ(unicode::properties(f[0].get<char32_t>()), f[1].get<unsigned>())
            << "flags of U+" << std::hex << f[0].get<unsigned>();
    }
    std::filesystem::remove_all(dir);
}

TEST(Unicode, Utf8RoundTripAndInvalidBytes) {
    const std::string text = "a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80";  // a é 中 😀
    EXPECT_EQ(unicode::decode_utf8(text), (std::u32string{U'a', 0xE9, 0x4E2D, 0x1F600}));
    EXPECT_EQ(unicode::encode_utf8(unicode::decode_utf8(text)), text);
    // Python's bytes.decode("utf-8", "replace"): one U+FFFD per maximal invalid subpart.
    EXPECT_EQ(unicode::decode_utf8("\xFF" "a\xE4\xB8" "b\xED\xA0\x80" "c\xC0\xAF"),
              (std::u32string{0xFFFD, U'a', 0xFFFD, U'b', 0xFFFD, 0xFFFD, 0xFFFD, U'c', 0xFFFD, 0xFFFD}));
}

}  // namespace
}  // namespace fstore
