#include "unicode.hpp"

#include <algorithm>
#include <cstdint>
#include <iterator>

namespace fstore::unicode {
namespace {

struct PropertyRun {
    char32_t first, last;
    unsigned value;
};
struct CodePointMap {
    char32_t from, to;
};
struct CodePointMap2 {
    char32_t from, to0, to1;
};
struct Decomposition {
    char32_t cp;
    std::uint16_t offset, size;
};
struct Composition {
    char32_t first, second, composite;
};

#include "unicode_tables.inc"

// Hangul syllables compose and decompose algorithmically (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

template <typename Run, std::size_t N>
const Run* find_run(const Run (&runs)[N], char32_t cp) noexcept {
    auto it = std::upper_bound(std::begin(runs), std::end(runs), cp,
                               [](char32_t c, const Run& r) { return c < r.first; });
    if (it == std::begin(runs)) return nullptr;
    --it;
    return cp <= it->last ? &*it : nullptr;
}

unsigned combining_class(char32_t cp) noexcept {
    if (cp < 0x300) return 0;
    const PropertyRun* run = find_run(kCombiningClass, cp);
    return run ? run->value : 0;
}

void append_decomposed(char32_t cp, std::u32string& out) {
    if (cp >= kSBase && cp < kSBase + kSCount) {
        const char32_t s = cp - kSBase;
        out.push_back(kLBase + s / kNCount);
        out.push_back(kVBase + (s % kNCount) / kTCount);
        if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
        return;
    }
    if (cp >= 0xC0) {
        auto it = std::lower_bound(std::begin(kDecomposition), std::end(kDecomposition), cp,
                                   [](const Decomposition& d, char32_t c) { return d.cp < c; });
        if (it != std::end(kDecomposition) && it->cp == cp) {
            out.append(kDecompositionData + it->offset, it->size);
            return;
        }
    }
    out.push_back(cp);
}

// Canonical ordering: stable sort of each run of non-starters by combining class.
void reorder(std::u32string& text) {
    std::size_t i = 0;
    while (i < text.size()) {
        if (combining_class(text[i]) == 0) {
            ++i;
            continue;
        }
        std::size_t j = i;
        while (j < text.size() && combining_class(text[j]) != 0) ++j;
        if (j - i > 1) {
            std::stable_sort(text.begin() + static_cast<std::ptrdiff_t>(i),
                             text.begin() + static_cast<std::ptrdiff_t>(j),
                             [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
        }
        i = j;
    }
}

char32_t compose_pair(char32_t a, char32_t b) noexcept {
    if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
        return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
    if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
        b < kTBase + kTCount)
        return a + (b - kTBase);
    auto it = std::lower_bound(std::begin(kComposition), std::end(kComposition), std::make_pair(a, b),
                               [](const Composition& c, const std::pair<char32_t, char32_t>& key) {
                                   return c.first != key.first ? c.first < key.first : c.second < key.second;
                               });
    if (it != std::end(kComposition) && it->first == a && it->second == b) return it->composite;
    return 0;
}

}  // namespace

unsigned properties(char32_t cp) noexcept {
    const PropertyRun* run = find_run(kRanges, cp);
    return run ? run->value : Property::control;  // beyond U+10FFFF: treat as unassigned
}

std::u32string decode_utf8(std::string_view text) {
    std::u32string out;
    out.reserve(text.size());
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    std::size_t i = 0;
    while (i < n) {
        const unsigned char b0 = p[i];
        if (b0 < 0x80) {
            out.push_back(b0);
            ++i;
            continue;
        }
        std::size_t need = 0;
        char32_t cp = 0;
        unsigned char lo = 0x80, hi = 0xBF;  // valid range of the second byte
        if (b0 >= 0xC2 && b0 <= 0xDF) {
            need = 1, cp = b0 & 0x1Fu;
        } else if (b0 >= 0xE0 && b0 <= 0xEF) {
            need = 2, cp = b0 & 0x0Fu;
            if (b0 == 0xE0) lo = 0xA0;
            if (b0 == 0xED) hi = 0x9F;  // no surrogates
        } else if (b0 >= 0xF0 && b0 <= 0xF4) {
            need = 3, cp = b0 & 0x07u;
            if (b0 == 0xF0) lo = 0x90;
            if (b0 == 0xF4) hi = 0x8F;
        } else {
            out.push_back(0xFFFD);
            ++i;
            continue;
        }
        std::size_t k = 1;
        for (; k <= need; ++k) {
            if (i + k >= n) break;
            const unsigned char b = p[i + k];
            if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
            cp = (cp << 6) | (b & 0x3Fu);
        }
        if (k <= need) {
            out.push_back(0xFFFD);  // the maximal valid prefix counts as one error
            i += k;
            continue;
        }
        out.push_back(cp);
        i += need + 1;
    }
    return out;
}

void append_utf8(char32_t cp, std::string& out) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

std::string encode_utf8(std::u32string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char32_t cp : text) append_utf8(cp, out);
    return out;
}

void append_lower(char32_t cp, std::u32string& out) {
    if (cp < 0x80) {
        out.push_back(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
        return;
    }
    auto it = std::lower_bound(std::begin(kLower), std::end(kLower), cp,
                               [](const CodePointMap& m, char32_t c) { return m.from < c; });
    if (it != std::end(kLower) && it->from == cp) {
        out.push_back(it->to);
        return;
    }
    for (const CodePointMap2& m : kLower2) {
        if (m.from == cp) {
            out.push_back(m.to0);
            out.push_back(m.to1);
            return;
        }
    }
    out.push_back(cp);
}

std::u32string nfd(std::u32string_view text) {
    std::u32string out;
    out.reserve(text.size());
    for (char32_t cp : text) append_decomposed(cp, out);
    reorder(out);
    return out;
}

std::u32string nfc(std::u32string_view text) {
    std::u32string d = nfd(text);
    if (d.empty()) return d;
    // Canonical composition (Unicode 3.11): combine each character with the last starter
    // unless a character of the same or higher combining class sits between them.
    std::size_t starter = 0;
    bool have_starter = combining_class(d[0]) == 0;
    unsigned last_class = have_starter ? 0 : 256;
    std::size_t out = 1;
    for (std::size_t i = 1; i < d.size(); ++i) {
        const char32_t cp = d[i];
        const unsigned cls = combining_class(cp);
        const bool blocked = out - 1 != starter && (last_class == 0 || last_class >= cls);
        if (have_starter && !blocked) {
            if (char32_t composite = compose_pair(d[starter], cp)) {
                d[starter] = composite;
                continue;
            }
        }
        if (cls == 0) {
            starter = out;
            have_starter = true;
        }
        last_class = cls;
        d[out++] = cp;
    }
    d.resize(out);
    return d;
}

}  // namespace fstore::unicode
