// WordPiece against ids derived by hand from a small vocab (see the comments per case).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fstore/error.hpp"
#include "fstore/tokenizer.hpp"

namespace fstore {
namespace {

using Ids = std::vector<std::int64_t>;

// id = line number
const std::vector<std::string> kVocab = {
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",                       // 0-4
    "a", "cell", "photo", "with", "sign",                               // 5-9
    "of", "reni", "##form", "/", "indent",                              // 10-14
    "##ed", "nucleus", "high", "nuclear", "-",                          // 15-19
    "to", "cyto", "##plasm", "##ic", "ratio",                           // 20-24
    "cafe", "naive", "(", ")", ",",                                     // 25-29
    ".", "\xE4\xB8\xAD" /*中*/, "\xE6\x96\x87" /*文*/, "##s", "blood",   // 30-34
    "!", "##a", "\xCE\xBF\xCE\xBB\xCE\xB1" /*ολα*/, "\xD0\xB5\xD0\xB6" /*еж*/,  // 35-38
    "Caf\xC3\xA9" /*Café*/, "caf\xC3\xA9" /*café*/,                     // 39-40
};

std::string vocab_text(const char* newline = "\n") {
    std::string text;
    for (const auto& t : kVocab) text += t + newline;
    return text;
}

TokenizerConfig wordpiece_config(bool lowercase = true, bool strip_accents = true, std::int64_t context = 77,
                                 const std::string& padding = "longest") {
    TokenizerConfig c;
    c.type = "wordpiece";
    c.file = "vocab.txt";
    c.lowercase = lowercase;
    c.strip_accents = strip_accents;
    c.context_length = context;
    c.padding = padding;
    return c;
}

class WordPieceGolden : public ::testing::Test {
protected:
    std::unique_ptr<Tokenizer> tok = make_tokenizer(wordpiece_config(), vocab_text());
};

TEST_F(WordPieceGolden, ConceptWithSlashSplitsIntoPieces) {
    // reni ##form / indent ##ed nucleus
    EXPECT_EQ(tok->encode("Reniform / indented nucleus"), (Ids{2, 11, 12, 13, 14, 15, 16, 3}));
}

TEST_F(WordPieceGolden, HyphenIsPunctuation) {
    // high nuclear - to - cyto ##plasm ##ic ratio
    EXPECT_EQ(tok->encode("High nuclear-to-cytoplasmic ratio"), (Ids{2, 17, 18, 19, 20, 19, 21, 22, 23, 24, 3}));
}

TEST_F(WordPieceGolden, AccentsAreStrippedComposedOrDecomposed) {
    EXPECT_EQ(tok->encode("Caf\xC3\xA9 na\xC3\xAFve"), (Ids{2, 25, 26, 3}));    // Café naïve (NFC)
    EXPECT_EQ(tok->encode("Cafe\xCC\x81 nai\xCC\x88ve"), (Ids{2, 25, 26, 3}));  // e + U+0301, i + U+0308
    // Greek ΌΛΑ -> όλα -> ολα ; Cyrillic Ёж -> ёж -> еж
    EXPECT_EQ(tok->encode("\xCE\x8C\xCE\x9B\xCE\x91 \xD0\x81\xD0\xB6"), (Ids{2, 37, 38, 3}));
}

TEST_F(WordPieceGolden, UnknownWordsBecomeOneUnk) {
    // "cells" = cell ##s; "cellz": cell matches but ##z does not -> the whole word is [UNK].
    EXPECT_EQ(tok->encode("cells cellz basophil"), (Ids{2, 6, 33, 1, 1, 3}));
    EXPECT_EQ(wordpiece_tokens(*tok, "cellz"), (std::vector<std::string>{"[UNK]"}));
}

TEST_F(WordPieceGolden, WordsLongerThan100CharsAreUnk) {
    const auto hundred = wordpiece_tokens(*tok, std::string(100, 'a'));  // a ##a x 99
    ASSERT_EQ(hundred.size(), 100u);
    EXPECT_EQ(hundred.front(), "a");
    EXPECT_EQ(hundred.back(), "##a");
    EXPECT_EQ(wordpiece_tokens(*tok, std::string(101, 'a')), (std::vector<std::string>{"[UNK]"}));
    EXPECT_EQ(tok->encode("a " + std::string(120, 'a') + " a"), (Ids{2, 5, 1, 5, 3}));
    // Length counts code points, not bytes: 60 x "é" (120 bytes) is a 60-char word "eee...".
    std::string accented;
    for (int i = 0; i < 60; ++i) accented += "\xC3\xA9";
    EXPECT_EQ(wordpiece_tokens(*tok, accented).size(), 1u);  // "e" is not in the vocab -> [UNK]
    EXPECT_EQ(wordpiece_tokens(*tok, accented).front(), "[UNK]");
}

TEST_F(WordPieceGolden, CjkIdeographsAreSeparateWords) {
    EXPECT_EQ(tok->encode("\xE4\xB8\xAD\xE6\x96\x87" "cell"), (Ids{2, 31, 32, 6, 3}));   // 中文cell
    EXPECT_EQ(tok->encode("\xE4\xB8\xAD" "x"), (Ids{2, 31, 1, 3}));                    // 中 + unknown x
}

TEST_F(WordPieceGolden, ControlCharsDroppedWhitespaceNormalized) {
    // \t and U+00A0 (Zs) separate words; NUL, U+FFFD, \x01, DEL, U+200B (Cf) vanish.
    // A dropped character joins its neighbours: "wi<NUL>th" is "with".
    EXPECT_EQ(tok->encode(std::string("cell\tphoto\xC2\xA0" "a\xEF\xBF\xBD\x01 si\x7Fgn\xE2\x80\x8B\r\nof wi") +
                          std::string(1, '\0') + "th"),
              (Ids{2, 6, 7, 5, 9, 10, 8, 3}));
    EXPECT_EQ(tok->encode(" \t\n "), (Ids{2, 3}));
    EXPECT_EQ(tok->encode(""), (Ids{2, 3}));
}

TEST_F(WordPieceGolden, InvalidUtf8IsDropped) {
    EXPECT_EQ(tok->encode("cell\xFF\xC3 photo"), (Ids{2, 6, 7, 3}));
}

TEST_F(WordPieceGolden, PunctuationSplits) {
    EXPECT_EQ(tok->encode("a cell, (blood)!"), (Ids{2, 5, 6, 29, 27, 34, 28, 35, 3}));
    EXPECT_EQ(tok->encode("a.cell"), (Ids{2, 5, 30, 6, 3}));
}

TEST_F(WordPieceGolden, LiteralSpecialTokensStayWhole) {
    // "[CLS]" and "[MASK]" are specials; "[mask]" is not (case-sensitive): [ mask ] -> 3 x [UNK].
    EXPECT_EQ(tok->encode("[CLS] cell [MASK]"), (Ids{2, 2, 6, 4, 3}));
    EXPECT_EQ(tok->encode("[mask]"), (Ids{2, 1, 1, 1, 3}));
    EXPECT_EQ(tok->encode("cell[SEP]photo"), (Ids{2, 6, 3, 7, 3}));
}

TEST(WordPiece, TruncationKeepsSepLast) {
    auto tok = make_tokenizer(wordpiece_config(true, true, 5), vocab_text());
    EXPECT_EQ(tok->encode("a cell photo with sign"), (Ids{2, 5, 6, 7, 3}));
    EXPECT_EQ(tok->encode("a cell photo"), (Ids{2, 5, 6, 7, 3}));
    EXPECT_EQ(tok->encode("a"), (Ids{2, 5, 3}));
}

TEST(WordPiece, BatchPaddingLongestAndMaxLength) {
    const std::vector<std::string> texts = {"a cell", "High nuclear-to-cytoplasmic ratio", ""};
    auto longest = make_tokenizer(wordpiece_config(true, true, 12, "longest"), vocab_text());
    const TokenBatch b = longest->encode_batch(texts);
    EXPECT_EQ(b.batch, 3);
    EXPECT_EQ(b.length, 11);
    EXPECT_EQ(b.lengths, (Ids{4, 11, 2}));
    EXPECT_EQ(longest->pad_id(), 0);
    const Ids expected = {2, 5, 6, 3, 0, 0, 0, 0, 0, 0, 0,            //
                          2, 17, 18, 19, 20, 19, 21, 22, 23, 24, 3,   //
                          2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    EXPECT_EQ(b.input_ids, expected);

    auto fixed = make_tokenizer(wordpiece_config(true, true, 12, "max_length"), vocab_text());
    const TokenBatch f = fixed->encode_batch(texts);
    EXPECT_EQ(f.length, 12);
    EXPECT_EQ(f.input_ids.size(), 36u);
    EXPECT_EQ(f.input_ids[11], 0);                                       // row 0 padded to 12
    EXPECT_EQ((Ids(f.input_ids.begin() + 12, f.input_ids.begin() + 24)),
              (Ids{2, 17, 18, 19, 20, 19, 21, 22, 23, 24, 3, 0}));
    EXPECT_EQ(fixed->encode_batch({}).batch, 0);
    EXPECT_EQ(fixed->encode_batch({}).input_ids.size(), 0u);
}

TEST(WordPiece, CaseAndAccentOptions) {
    // Cased, accents kept: "Café" is its own token; lowercase without stripping: "café".
    auto cased = make_tokenizer(wordpiece_config(false, false), vocab_text());
    EXPECT_EQ(cased->encode("Caf\xC3\xA9 cafe Cafe"), (Ids{2, 39, 25, 1, 3}));
    auto lower_keep = make_tokenizer(wordpiece_config(true, false), vocab_text());
    EXPECT_EQ(lower_keep->encode("CAF\xC3\x89 Cafe\xCC\x81"), (Ids{2, 40, 40, 3}));  // NFC composes e + U+0301
    auto cased_strip = make_tokenizer(wordpiece_config(false, true), vocab_text());
    EXPECT_EQ(cased_strip->encode("Caf\xC3\xA9 caf\xC3\xA9"), (Ids{2, 1, 25, 3}));  // "Cafe" is not in the vocab
}

TEST(WordPiece, VocabLineEndings) {
    auto crlf = make_tokenizer(wordpiece_config(), vocab_text("\r\n"));
    EXPECT_EQ(crlf->encode("Reniform / indented nucleus"), (Ids{2, 11, 12, 13, 14, 15, 16, 3}));
    std::string no_final_newline = vocab_text();
    no_final_newline.pop_back();
    EXPECT_EQ(make_tokenizer(wordpiece_config(), no_final_newline)->encode("caf\xC3\xA9"), (Ids{2, 25, 3}));
}

TEST(WordPiece, MissingSpecialTokenIsModelError) {
    auto config = wordpiece_config();
    config.pad_token = "<pad>";
    try {
        make_tokenizer(config, vocab_text());
        FAIL() << "expected ModelError";
    } catch (const ModelError& e) {
        EXPECT_NE(std::string(e.what()).find("pad_token"), std::string::npos) << e.what();
    }
    EXPECT_THROW(make_tokenizer(wordpiece_config(), ""), ModelError);
    EXPECT_THROW(make_tokenizer(wordpiece_config(), "[PAD]\n[UNK]\n\xFF\xFE\n[CLS]\n[SEP]\n"), ModelError);
}

TEST(TokenizerConfig, ParsesWordPieceAndSentencePieceObjects) {
    const auto wp = tokenizer_config_from_json(nlohmann::json::parse(R"({"type": "wordpiece", "file": "fstore/vocab.txt",
        "lowercase": true, "strip_accents": false, "padding": "longest", "cls_token": "<s>",
        "sep_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})"), 64);
    EXPECT_EQ(wp.type, "wordpiece");
    EXPECT_EQ(wp.file, "fstore/vocab.txt");
    EXPECT_FALSE(wp.strip_accents);
    EXPECT_EQ(wp.cls_token, "<s>");
    EXPECT_EQ(wp.unk_token, "<unk>");
    EXPECT_EQ(wp.context_length, 64);
    const auto sp = tokenizer_config_from_json(nlohmann::json::parse(R"({"type": "sentencepiece",
        "file": "fstore/spiece.model", "lowercase": false, "padding": "max_length", "add_bos": false,
        "add_eos": true, "pad_id": 1})"), 16);
    EXPECT_EQ(sp.type, "sentencepiece");
    EXPECT_EQ(sp.padding, "max_length");
    EXPECT_EQ(sp.pad_id, 1);
    EXPECT_TRUE(sp.add_eos);
    EXPECT_FALSE(sp.add_bos);
}

void expect_model_error_naming(const std::string& json_text, const std::string& needle, std::int64_t context = 77) {
    try {
        tokenizer_config_from_json(nlohmann::json::parse(json_text), context);
        ADD_FAILURE() << "expected ModelError for " << json_text;
    } catch (const ModelError& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
}

TEST(TokenizerConfig, RejectsBadObjects) {
    const std::string sp_base = R"("file": "m", "lowercase": false, "padding": "max_length", "add_bos": false, "add_eos": true)";
    expect_model_error_naming(R"({"type": "bpe", "file": "x", "lowercase": true, "padding": "longest"})", "bpe");
    expect_model_error_naming(R"({"file": "x"})", "\"type\"");
    expect_model_error_naming("{\"type\": \"sentencepiece\", " + sp_base + "}", "\"pad_id\"");
    expect_model_error_naming("{\"type\": \"sentencepiece\", " + sp_base + ", \"pad_id\": \"1\"}", "\"pad_id\"");
    expect_model_error_naming("{\"type\": \"sentencepiece\", " + sp_base + ", \"pad_id\": 1, \"lower_case\": true}",
                              "\"lower_case\"");
    expect_model_error_naming(R"({"type": "wordpiece", "file": "v", "lowercase": true, "strip_accents": true,
        "padding": "longest", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]"})", "\"unk_token\"");
    expect_model_error_naming(R"({"type": "wordpiece", "file": "v", "lowercase": 1, "strip_accents": true,
        "padding": "longest", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]"})",
                              "\"lowercase\"");
    expect_model_error_naming(R"({"type": "wordpiece", "file": "v", "lowercase": true, "strip_accents": true,
        "padding": "right", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]"})",
                              "right");
    expect_model_error_naming(R"({"type": "wordpiece", "file": "v", "lowercase": true, "strip_accents": true,
        "padding": "longest", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]"})",
                              "context_length", 2);
    expect_model_error_naming("[1, 2]", "object");
}

}  // namespace
}  // namespace fstore
