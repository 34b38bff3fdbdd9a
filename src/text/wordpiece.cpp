// WordPiece with HF BertTokenizer (slow) semantics. The steps, in HF's order:
//   1. with lowercase: str.lower() per character, except where a special token is written
//      (PreTrainedTokenizer.tokenize's regex);
//   2. split out special tokens (the added-tokens trie);
//   3. BasicTokenizer per remaining segment: clean, space out CJK, NFC, whitespace split,
//      then per word: lower, strip accents, split punctuation;
//   4. WordpieceTokenizer: greedy longest match with "##" continuations.
#include <algorithm>

#include <fmt/format.h>

#include "backends.hpp"
#include "fstore/error.hpp"
#include "unicode.hpp"

namespace fstore::detail {
namespace {

constexpr std::size_t kMaxWordChars = 100;  // HF's max_input_chars_per_word

bool is_cjk(char32_t cp) noexcept {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

bool is_punctuation(char32_t cp) noexcept {
    if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
        (cp >= 123 && cp <= 126))
        return true;
    return (unicode::properties(cp) & unicode::punctuation) != 0;
}

bool is_py_space(char32_t cp) noexcept { return (unicode::properties(cp) & unicode::py_space) != 0; }

// Length of the special token matching at text[pos] (0 if none); `longest` picks the
// longest match (the trie), otherwise the first in order (the regex alternation).
std::size_t match_special(const std::vector<std::u32string>& specials, std::u32string_view text,
                          std::size_t pos, bool longest) {
    std::size_t best = 0;
    for (const auto& s : specials) {
        if (s.empty() || s.size() <= best || text.size() - pos < s.size()) continue;
        if (text.compare(pos, s.size(), s) == 0) {
            best = s.size();
            if (!longest) break;
        }
    }
    return best;
}

std::vector<std::u32string_view> split_py_whitespace(std::u32string_view text) {
    std::vector<std::u32string_view> words;
    std::size_t i = 0;
    while (i < text.size()) {
        while (i < text.size() && is_py_space(text[i])) ++i;
        std::size_t j = i;
        while (j < text.size() && !is_py_space(text[j])) ++j;
        if (j > i) words.push_back(text.substr(i, j - i));
        i = j;
    }
    return words;
}

std::vector<std::string> split_vocab_lines(std::string_view text) {
    // Python's text mode reads "\n", "\r\n" and "\r" all as line ends.
    std::vector<std::string> lines;
    std::size_t start = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\n' || text[i] == '\r') {
            lines.emplace_back(text.substr(start, i - start));
            if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
            start = i + 1;
        }
    }
    if (start < text.size()) lines.emplace_back(text.substr(start));
    return lines;
}

}  // namespace

WordPieceTokenizer::WordPieceTokenizer(TokenizerConfig config, std::string_view vocab_text)
    : config_(std::move(config)) {
    const auto lines = split_vocab_lines(vocab_text);
    if (lines.empty()) {
        throw ModelError(fmt::format(
            "tokenizer vocab '{}' is empty: the archive's vocab file must list one token per line",
            config_.file));
    }
    vocab_.reserve(lines.size());
    for (std::size_t i = 0; i < lines.size(); ++i) {
        const auto decoded = unicode::decode_utf8(lines[i]);
        if (std::find(decoded.begin(), decoded.end(), U'\uFFFD') != decoded.end() &&
            lines[i].find("\xEF\xBF\xBD") == std::string::npos) {
            throw ModelError(fmt::format(
                "tokenizer vocab '{}' line {} is not valid UTF-8: re-export the vocab as UTF-8",
                config_.file, i + 1));
        }
        vocab_[lines[i]] = static_cast<std::int64_t>(i);  // a repeated token keeps its last line, as in HF
    }
    auto required_id = [&](const std::string& token, const char* key) {
        auto it = vocab_.find(token);
        if (it == vocab_.end()) {
            throw ModelError(fmt::format(
                "tokenizer vocab '{}' has no {} \"{}\": set \"{}\" in fstore/config.json to a "
                "token of the vocab",
                config_.file, key, token, key));
        }
        return it->second;
    };
    unk_id_ = required_id(config_.unk_token, "unk_token");
    cls_id_ = required_id(config_.cls_token, "cls_token");
    sep_id_ = required_id(config_.sep_token, "sep_token");
    pad_id_ = required_id(config_.pad_token, "pad_token");
    for (const std::string* s : {&config_.unk_token, &config_.sep_token, &config_.pad_token,
                                 &config_.cls_token}) {
        specials_.push_back(unicode::decode_utf8(*s));
    }
    specials_.push_back(U"[MASK]");  // HF's BertTokenizer always registers it
}

std::int64_t WordPieceTokenizer::padded_length() const {
    return config_.padding == "max_length" ? config_.context_length : 0;
}

std::int64_t WordPieceTokenizer::id_of(const std::string& token) const {
    auto it = vocab_.find(token);
    return it == vocab_.end() ? unk_id_ : it->second;
}

void WordPieceTokenizer::basic_tokenize(std::u32string_view segment,
                                        std::vector<std::u32string>& words) const {
    // Clean control characters and normalize whitespace; space out CJK ideographs.
    std::u32string cleaned;
    cleaned.reserve(segment.size());
    for (char32_t cp : segment) {
        const bool tab_or_newline = cp == U'\t' || cp == U'\n' || cp == U'\r';
        const unsigned props = unicode::properties(cp);
        if (cp == 0 || cp == 0xFFFD || (!tab_or_newline && (props & unicode::control))) continue;
        if (tab_or_newline || cp == U' ' || (props & unicode::space_sep)) {
            cleaned.push_back(U' ');
        } else if (is_cjk(cp)) {
            cleaned.push_back(U' ');
            cleaned.push_back(cp);
            cleaned.push_back(U' ');
        } else {
            cleaned.push_back(cp);
        }
    }
    const std::u32string normalized = unicode::nfc(cleaned);

    for (std::u32string_view word : split_py_whitespace(normalized)) {
        std::u32string token(word);
        if (match_special(specials_, token, 0, true) == token.size()) {
            words.push_back(std::move(token));  // HF's never_split
            continue;
        }
        if (config_.lowercase) {
            std::u32string lowered;
            lowered.reserve(token.size());
            for (char32_t cp : token) unicode::append_lower(cp, lowered);
            token.swap(lowered);
        }
        if (config_.strip_accents) {
            std::u32string stripped;
            for (char32_t cp : unicode::nfd(token)) {
                if (!(unicode::properties(cp) & unicode::nonspacing)) stripped.push_back(cp);
            }
            token.swap(stripped);
        }
        // Each punctuation character becomes a word of its own.
        std::u32string current;
        for (char32_t cp : token) {
            if (is_punctuation(cp)) {
                if (!current.empty()) words.push_back(std::move(current));
                current.clear();
                words.emplace_back(1, cp);
            } else {
                current.push_back(cp);
            }
        }
        if (!current.empty()) words.push_back(std::move(current));
    }
}

void WordPieceTokenizer::wordpiece(const std::u32string& word, std::vector<std::string>& out) const {
    if (word.size() > kMaxWordChars) {
        out.push_back(config_.unk_token);
        return;
    }
    const std::size_t first_piece = out.size();
    std::size_t start = 0;
    std::string candidate;
    while (start < word.size()) {
        std::size_t end = word.size();
        bool found = false;
        while (start < end) {
            candidate.assign(start > 0 ? "##" : "");
            for (std::size_t i = start; i < end; ++i) unicode::append_utf8(word[i], candidate);
            if (vocab_.count(candidate)) {
                found = true;
                break;
            }
            --end;
        }
        if (!found) {
            out.resize(first_piece);
            out.push_back(config_.unk_token);
            return;
        }
        out.push_back(candidate);
        start = end;
    }
}

std::vector<std::string> WordPieceTokenizer::tokenize(const std::string& text) const {
    std::u32string chars = unicode::decode_utf8(text);
    if (config_.lowercase) {
        std::u32string lowered;
        lowered.reserve(chars.size());
        for (std::size_t i = 0; i < chars.size();) {
            if (std::size_t n = match_special(specials_, chars, i, false)) {
                lowered.append(chars, i, n);
                i += n;
            } else {
                unicode::append_lower(chars[i++], lowered);
            }
        }
        chars.swap(lowered);
    }
    // Special tokens split out here map straight to their ids (unk if not in the vocab);
    // the text between them goes through BasicTokenizer and WordPiece.
    std::vector<std::string> tokens;
    std::vector<std::u32string> words;
    auto flush = [&](std::u32string_view segment) {
        words.clear();
        basic_tokenize(segment, words);
        for (const auto& word : words) wordpiece(word, tokens);
    };
    std::size_t segment_start = 0;
    const std::u32string_view view(chars);
    for (std::size_t i = 0; i < chars.size();) {
        if (std::size_t n = match_special(specials_, view, i, true)) {
            flush(view.substr(segment_start, i - segment_start));
            tokens.push_back(unicode::encode_utf8(view.substr(i, n)));
            i += n;
            segment_start = i;
        } else {
            ++i;
        }
    }
    flush(view.substr(segment_start));
    return tokens;
}

std::vector<std::int64_t> WordPieceTokenizer::encode(const std::string& text) const {
    const auto tokens = tokenize(text);
    const std::size_t keep = std::min(tokens.size(), static_cast<std::size_t>(config_.context_length - 2));
    std::vector<std::int64_t> ids;
    ids.reserve(keep + 2);
    ids.push_back(cls_id_);
    for (std::size_t i = 0; i < keep; ++i) ids.push_back(id_of(tokens[i]));
    ids.push_back(sep_id_);
    return ids;
}

std::unique_ptr<Tokenizer> make_wordpiece(const TokenizerConfig& config, std::string_view vocab_text) {
    if (config.context_length < 3) {
        throw ModelError(fmt::format(
            "context_length {} is too short for [CLS] text [SEP]: fix fstore/config.json",
            config.context_length));
    }
    return std::make_unique<WordPieceTokenizer>(config, vocab_text);
}

}  // namespace fstore::detail

namespace fstore {

std::vector<std::string> wordpiece_tokens(const Tokenizer& tokenizer, const std::string& text) {
    const auto* wp = dynamic_cast<const detail::WordPieceTokenizer*>(&tokenizer);
    if (!wp) throw ModelError("wordpiece_tokens: the tokenizer is not a WordPiece tokenizer: use encode()");
    return wp->tokenize(text);
}

}  // namespace fstore
