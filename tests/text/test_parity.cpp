// C++ tokenizers against the Python references (tests/python/fstore_ref/tokenize.py) on
// many random and realistic strings: every BloodMNIST prompt, Unicode edge cases, random
// code points. WordPiece uses a generated vocab; SentencePiece a model trained on the
// prompts by the driver (Python sentencepiece), so both sides read the same files.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "fstore/error.hpp"
#include "fstore/tokenizer.hpp"
#include "test_helpers.hpp"

namespace fstore {
namespace {

namespace fs = std::filesystem;

TEST(TokenizerParity, WordPieceMatchesPythonReference) {
    const fs::path dir = test::make_temp_dir("wp_parity");
    const auto reference = test::run_reference_driver("wordpiece", dir);
    const std::string vocab = test::read_file(dir / "vocab.txt");
    std::size_t compared = 0, with_unk = 0, truncated = 0;
    for (const auto& c : reference["cases"]) {
        TokenizerConfig config;
        config.type = "wordpiece";
        config.lowercase = c["lowercase"].get<bool>();
        config.strip_accents = c["strip_accents"].get<bool>();
        config.context_length = c["context_length"].get<std::int64_t>();
        auto tok = make_tokenizer(config, vocab);
        const auto& texts = c["texts"];
        for (std::size_t i = 0; i < texts.size(); ++i) {
            const std::string text = texts[i].get<std::string>();
            const auto expected_tokens = c["tokens"][i].get<std::vector<std::string>>();
            const auto expected_ids = c["ids"][i].get<std::vector<std::int64_t>>();
            ASSERT_EQ(wordpiece_tokens(*tok, text), expected_tokens)
                << "text #" << i << " " << nlohmann::json(text).dump() << " lowercase=" << config.lowercase
                << " strip_accents=" << config.strip_accents;
            ASSERT_EQ(tok->encode(text), expected_ids) << "text #" << i << " " << nlohmann::json(text).dump();
            with_unk += std::count(expected_ids.begin(), expected_ids.end(), 1) > 0;
            truncated += static_cast<std::int64_t>(expected_ids.size()) == config.context_length;
            ++compared;
        }
    }
    // The corpus must really exercise the paths it claims to.
    EXPECT_GT(compared, 2000u);
    EXPECT_GT(with_unk, 100u);
    EXPECT_GT(truncated, 10u);
    fs::remove_all(dir);
}

TEST(TokenizerParity, SentencePieceMatchesPythonReference) {
    const fs::path dir = test::make_temp_dir("spm_parity");
    const auto reference = test::run_reference_driver("sentencepiece", dir);
    std::size_t compared = 0;
    for (const auto& c : reference["cases"]) {
        const auto config = tokenizer_config_from_json(
            nlohmann::json{{"type", "sentencepiece"}, {"file", c["model"]}, {"lowercase", c["config"]["lowercase"]},
                           {"padding", c["config"]["padding"]}, {"add_bos", c["config"]["add_bos"]},
                           {"add_eos", c["config"]["add_eos"]}, {"pad_id", c["config"]["pad_id"]}},
            c["context_length"].get<std::int64_t>());
        auto tok = make_tokenizer(config, test::read_file(dir / c["model"].get<std::string>()));
        EXPECT_EQ(tok->pad_id(), c["pad_id"].get<std::int64_t>());
        const auto& texts = c["texts"];
        for (std::size_t i = 0; i < texts.size(); ++i) {
            const std::string text = texts[i].get<std::string>();
            ASSERT_EQ(tok->encode(text), c["ids"][i].get<std::vector<std::int64_t>>())
                << "text #" << i << " " << nlohmann::json(text).dump() << " model " << c["model"];
            ++compared;
        }
        const std::vector<std::string> head = c["texts"].get<std::vector<std::string>>();
        const TokenBatch batch = tok->encode_batch(std::vector<std::string>(head.begin(), head.begin() + 30));
        const auto expected_rows = c["batch_ids"].get<std::vector<std::vector<std::int64_t>>>();
        ASSERT_EQ(batch.batch, 30);
        ASSERT_EQ(batch.length, static_cast<std::int64_t>(expected_rows[0].size()));
        std::vector<std::int64_t> flat;
        for (const auto& row : expected_rows) flat.insert(flat.end(), row.begin(), row.end());
        EXPECT_EQ(batch.input_ids, flat);
        EXPECT_EQ(batch.lengths, c["batch_lengths"].get<std::vector<std::int64_t>>());
    }
    EXPECT_GT(compared, 1000u);
    fs::remove_all(dir);
}

TEST(SentencePiece, BadModelAndMissingModuleAreModelErrors) {
    TokenizerConfig config;
    config.type = "sentencepiece";
    config.file = "fstore/spiece.model";
    config.pad_id = 0;
    try {
        make_tokenizer(config, "not a model");
        FAIL() << "expected ModelError";
    } catch (const ModelError& e) {
        EXPECT_NE(std::string(e.what()).find("fstore/spiece.model"), std::string::npos) << e.what();
    }
    ::setenv("FSTORE_SPM_MODULE", "/nonexistent/libfstore_spm.so", 1);
    try {
        make_tokenizer(config, "not a model");
        ADD_FAILURE() << "expected ModelError";
    } catch (const ModelError& e) {
        EXPECT_NE(std::string(e.what()).find("FSTORE_SPM_MODULE"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("/nonexistent/libfstore_spm.so"), std::string::npos) << e.what();
    }
    ::unsetenv("FSTORE_SPM_MODULE");
}

TEST(SentencePiece, ModelWithoutPadIdNeedsConfigPadId) {
    const fs::path dir = test::make_temp_dir("spm_nopad");
    test::run_reference_driver("sentencepiece", dir);
    TokenizerConfig config;
    config.type = "sentencepiece";
    config.file = "spm_nopad.model";
    config.pad_id = -1;
    const std::string bytes = test::read_file(dir / "spm_nopad.model");
    try {
        make_tokenizer(config, bytes);
        ADD_FAILURE() << "expected ModelError";
    } catch (const ModelError& e) {
        EXPECT_NE(std::string(e.what()).find("pad_id"), std::string::npos) << e.what();
    }
    config.add_bos = true;  // this model has no BOS
    config.pad_id = 0;
    EXPECT_THROW(make_tokenizer(config, bytes), ModelError);
    config.add_bos = false;
    config.pad_id = 100000;  // outside the vocab
    EXPECT_THROW(make_tokenizer(config, bytes), ModelError);
    fs::remove_all(dir);
}

}  // namespace
}  // namespace fstore
