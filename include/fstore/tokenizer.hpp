// Tokenizers: text prompts -> input ids for a model's encode_text.
//
// Two backends sit behind one interface, chosen by the "tokenizer" object of the model
// archive's fstore/config.json (docs: design.md "Model archive"):
//
//   - "wordpiece": a BERT vocab.txt, tokenized exactly like HF transformers' slow
//     BertTokenizer (BasicTokenizer + WordpieceTokenizer): per-character lowercasing,
//     text cleaning (control characters, NUL and U+FFFD dropped, whitespace normalized),
//     NFC, optional accent stripping (NFD, combining marks Mn dropped), splitting on
//     whitespace, punctuation (ASCII punctuation + Unicode P*) and around CJK ideographs,
//     then greedy longest-match-first WordPiece with "##" continuations; a word that
//     cannot be matched, or is longer than 100 code points, becomes unk_token. Special
//     tokens ([CLS], [SEP], [PAD], [UNK], [MASK]) written literally in a text stay one
//     token, as in HF. Output: [CLS] tokens... [SEP]. The Unicode data comes from tables
//     generated from Python's unicodedata (scripts/gen_unicode_tables.py): no ICU.
//     tests/python/fstore_ref/tokenize.py is the pure-Python reference it is tested against.
//   - "sentencepiece": a serialized SentencePiece model; with lowercase, each code point is
//     lowercased first (Python's chr(c).lower(), as the reference does); then
//     [BOS] pieces [EOS] as add_bos/add_eos say; pad_id -1 takes the model's own pad id.
//     Debian's libsentencepiece cannot share a process with LibTorch (conflicting protobuf
//     symbols, docs: platform-facts.md), so this backend lives in a separate module
//     (libfstore_spm.so) that make_tokenizer dlopens with RTLD_DEEPBIND.
//     The module is looked for at: $FSTORE_SPM_MODULE, then next to the executable
//     (<exe dir>/, <exe dir>/../lib/, <exe dir>/../lib/fstore/), then in the build tree.
//
// Contracts, both backends:
//   - encode() returns the ids of one text with its special tokens, truncated to
//     context_length so that the closing token (SEP / EOS) is always kept last.
//   - encode_batch() pads every row with pad_id() to the longest row ("longest") or to
//     context_length ("max_length"); `lengths` holds each row's unpadded length.
//   - Invalid UTF-8 bytes are read as U+FFFD (which WordPiece then drops).
//   - Tokenizers are immutable after construction: encode is safe from many threads.
// Errors: a bad config, vocab or model is a ModelError naming the problem and the fix.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace fstore {

// The "tokenizer" object of fstore/config.json, plus the model's context length.
struct TokenizerConfig {
    std::string type;  // "wordpiece" | "sentencepiece"
    std::string file;  // archive member holding the vocab / model (informational here)
    bool lowercase = true;
    bool strip_accents = true;       // wordpiece only
    std::string padding = "longest";  // "longest" | "max_length"
    std::string cls_token = "[CLS]", sep_token = "[SEP]", pad_token = "[PAD]",
                unk_token = "[UNK]";  // wordpiece only
    bool add_bos = false, add_eos = true;  // sentencepiece only
    std::int64_t pad_id = -1;  // sentencepiece: -1 = the model's own pad id
    std::int64_t context_length = 77;  // from the top-level config
};

// Reads and validates the "tokenizer" object. Required keys: type, file, lowercase,
// padding, and per type: wordpiece: strip_accents, cls_token, sep_token, pad_token,
// unk_token; sentencepiece: add_bos, add_eos, pad_id. Keys of the other type are
// accepted; an unknown key, unknown type, missing key or wrong JSON type is a ModelError
// naming the key. context_length must leave room for the special tokens.
TokenizerConfig tokenizer_config_from_json(const nlohmann::json& tokenizer,
                                           std::int64_t context_length);

// Token ids of a batch of texts, padded to one length.
struct TokenBatch {
    std::int64_t batch = 0, length = 0;
    std::vector<std::int64_t> input_ids;  // batch x length, row-major
    std::vector<std::int64_t> lengths;    // unpadded length of each row
};

class Tokenizer {
public:
    virtual ~Tokenizer();
    // Ids of one text, with special tokens, truncated to context_length.
    virtual std::vector<std::int64_t> encode(const std::string& text) const = 0;
    // Ids of many texts, padded with pad_id() to the longest row, or to padded_length()
    // when that is non-zero. An empty input gives batch = 0, length = 0.
    virtual TokenBatch encode_batch(const std::vector<std::string>& texts) const;
    // The id padding positions hold (models rebuild their attention mask from it).
    virtual std::int64_t pad_id() const = 0;

protected:
    // The fixed row length of encode_batch ("max_length": context_length), 0 for "longest".
    virtual std::int64_t padded_length() const { return 0; }
};

// Builds the backend named by config.type from the vocab file's bytes (wordpiece: the
// content of vocab.txt, one token per line, id = line number) or the serialized
// SentencePiece model (sentencepiece).
std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerConfig& config, std::string file_bytes);

// The WordPiece tokens (strings, no special tokens added, no truncation) of one text;
// exposed for tests and diagnostics. Throws ModelError for a sentencepiece tokenizer.
std::vector<std::string> wordpiece_tokens(const Tokenizer& tokenizer, const std::string& text);

}  // namespace fstore
