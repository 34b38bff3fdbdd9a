// Internal: the two tokenizer backends behind fstore::make_tokenizer.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fstore/tokenizer.hpp"

namespace fstore::detail {

// HF BertTokenizer (slow) semantics; see tokenizer.hpp.
class WordPieceTokenizer final : public Tokenizer {
public:
    WordPieceTokenizer(TokenizerConfig config, std::string_view vocab_text);

    std::vector<std::int64_t> encode(const std::string& text) const override;
    std::int64_t pad_id() const override { return pad_id_; }

    // Tokens of one text without special tokens or truncation (HF's tokenize()).
    std::vector<std::string> tokenize(const std::string& text) const;

protected:
    std::int64_t padded_length() const override;

private:
    void basic_tokenize(std::u32string_view segment, std::vector<std::u32string>& words) const;
    void wordpiece(const std::u32string& word, std::vector<std::string>& out) const;
    std::int64_t id_of(const std::string& token) const;

    TokenizerConfig config_;
    std::unordered_map<std::string, std::int64_t> vocab_;
    std::vector<std::u32string> specials_;  // unk, sep, pad, cls, mask: HF's all_special_tokens order
    std::int64_t cls_id_ = 0, sep_id_ = 0, pad_id_ = 0, unk_id_ = 0;
};

std::unique_ptr<Tokenizer> make_wordpiece(const TokenizerConfig& config, std::string_view vocab_text);
std::unique_ptr<Tokenizer> make_sentencepiece(const TokenizerConfig& config, std::string model_bytes);

}  // namespace fstore::detail
