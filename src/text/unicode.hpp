// Internal: the slice of Unicode that the tokenizers need (UTF-8, categories, lowercase,
// NFD/NFC), answered from tables generated out of Python's unicodedata
// (scripts/gen_unicode_tables.py), so results match the Python reference exactly.
#pragma once

#include <string>
#include <string_view>

namespace fstore::unicode {

// Property flags of one code point (bit set per property).
enum Property : unsigned {
    control = 1,      // general category C* (Cc, Cf, Cn, Co, Cs)
    space_sep = 2,    // Zs
    punctuation = 4,  // P*
    nonspacing = 8,   // Mn
    py_space = 16,    // Python's str.isspace()
};

unsigned properties(char32_t cp) noexcept;

// Decodes UTF-8; each invalid byte sequence (maximal subpart) becomes U+FFFD.
std::u32string decode_utf8(std::string_view text);
std::string encode_utf8(std::u32string_view text);
void append_utf8(char32_t cp, std::string& out);

// Appends Python's chr(cp).lower().
void append_lower(char32_t cp, std::u32string& out);

// unicodedata.normalize("NFD" / "NFC", text).
std::u32string nfd(std::u32string_view text);
std::u32string nfc(std::u32string_view text);

}  // namespace fstore::unicode
