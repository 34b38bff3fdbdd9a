// Tokenizer config parsing, the shared batch padding, and the backend factory.
#include "fstore/tokenizer.hpp"

#include <algorithm>
#include <array>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backends.hpp"
#include "fstore/error.hpp"

namespace fstore {
namespace {

constexpr std::array<const char*, 12> kKnownKeys = {
    "type",      "file",      "lowercase", "strip_accents", "padding", "cls_token", "sep_token",
    "pad_token", "unk_token", "add_bos",   "add_eos",       "pad_id"};

const nlohmann::json& require(const nlohmann::json& object, const char* key) {
    auto it = object.find(key);
    if (it == object.end()) {
        throw ModelError(fmt::format(
            "model config: the \"tokenizer\" object has no \"{}\" key: re-export the model "
            "archive with a complete fstore/config.json (docs: design.md \"Model archive\")",
            key));
    }
    return *it;
}

[[noreturn]] void wrong_type(const char* key, const char* expected, const nlohmann::json& value) {
    throw ModelError(fmt::format(
        "model config: tokenizer key \"{}\" must be {}, not {}: fix fstore/config.json in the "
        "model archive",
        key, expected, value.dump()));
}

void read(const nlohmann::json& object, const char* key, bool required, std::string& out) {
    if (!required && !object.contains(key)) return;
    const auto& value = require(object, key);
    if (!value.is_string()) wrong_type(key, "a string", value);
    out = value.get<std::string>();
}

void read(const nlohmann::json& object, const char* key, bool required, bool& out) {
    if (!required && !object.contains(key)) return;
    const auto& value = require(object, key);
    if (!value.is_boolean()) wrong_type(key, "true or false", value);
    out = value.get<bool>();
}

void read(const nlohmann::json& object, const char* key, bool required, std::int64_t& out) {
    if (!required && !object.contains(key)) return;
    const auto& value = require(object, key);
    if (!value.is_number_integer()) wrong_type(key, "an integer", value);
    out = value.get<std::int64_t>();
}

}  // namespace

Tokenizer::~Tokenizer() = default;

TokenBatch Tokenizer::encode_batch(const std::vector<std::string>& texts) const {
    std::vector<std::vector<std::int64_t>> rows;
    rows.reserve(texts.size());
    std::int64_t longest = 0;
    for (const auto& text : texts) {
        rows.push_back(encode(text));
        longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(rows.back().size()));
    }
    TokenBatch batch;
    batch.batch = static_cast<std::int64_t>(texts.size());
    const std::int64_t fixed = padded_length();
    batch.length = texts.empty() ? 0 : std::max(fixed, longest);
    batch.input_ids.assign(static_cast<std::size_t>(batch.batch * batch.length), pad_id());
    batch.lengths.reserve(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
        std::copy(rows[i].begin(), rows[i].end(),
                  batch.input_ids.begin() + static_cast<std::ptrdiff_t>(i * static_cast<std::size_t>(batch.length)));
        batch.lengths.push_back(static_cast<std::int64_t>(rows[i].size()));
    }
    return batch;
}

TokenizerConfig tokenizer_config_from_json(const nlohmann::json& tokenizer, std::int64_t context_length) {
    if (!tokenizer.is_object()) {
        throw ModelError(fmt::format(
            "model config: \"tokenizer\" must be a JSON object, not {}: fix fstore/config.json "
            "in the model archive",
            tokenizer.dump()));
    }
    for (const auto& item : tokenizer.items()) {
        if (std::find(kKnownKeys.begin(), kKnownKeys.end(), item.key()) == kKnownKeys.end()) {
            throw ModelError(fmt::format(
                "model config: unknown tokenizer key \"{}\": remove it from fstore/config.json "
                "(known keys: type, file, lowercase, strip_accents, padding, cls_token, "
                "sep_token, pad_token, unk_token, add_bos, add_eos, pad_id)",
                item.key()));
        }
    }
    TokenizerConfig config;
    config.context_length = context_length;
    read(tokenizer, "type", true, config.type);
    const bool wordpiece = config.type == "wordpiece";
    const bool sentencepiece = config.type == "sentencepiece";
    if (!wordpiece && !sentencepiece) {
        throw ModelError(fmt::format(
            "model config: unknown tokenizer \"type\" \"{}\": use \"wordpiece\" or \"sentencepiece\"",
            config.type));
    }
    read(tokenizer, "file", true, config.file);
    read(tokenizer, "lowercase", true, config.lowercase);
    read(tokenizer, "padding", true, config.padding);
    if (config.padding != "longest" && config.padding != "max_length") {
        throw ModelError(fmt::format(
            "model config: tokenizer \"padding\" is \"{}\": use \"longest\" or \"max_length\"",
            config.padding));
    }
    if (sentencepiece) config.strip_accents = false;  // not a SentencePiece notion by default
    read(tokenizer, "strip_accents", wordpiece, config.strip_accents);
    read(tokenizer, "cls_token", wordpiece, config.cls_token);
    read(tokenizer, "sep_token", wordpiece, config.sep_token);
    read(tokenizer, "pad_token", wordpiece, config.pad_token);
    read(tokenizer, "unk_token", wordpiece, config.unk_token);
    read(tokenizer, "add_bos", sentencepiece, config.add_bos);
    read(tokenizer, "add_eos", sentencepiece, config.add_eos);
    read(tokenizer, "pad_id", sentencepiece, config.pad_id);

    const std::int64_t specials = wordpiece ? 2 : (config.add_bos ? 1 : 0) + (config.add_eos ? 1 : 0);
    if (context_length <= specials) {
        throw ModelError(fmt::format(
            "model config: \"context_length\" {} leaves no room for text after {} special "
            "token(s): fix fstore/config.json in the model archive",
            context_length, specials));
    }
    return config;
}

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerConfig& config, std::string file_bytes) {
    if (config.padding != "longest" && config.padding != "max_length") {
        throw ModelError(fmt::format("tokenizer padding \"{}\" is unknown: use \"longest\" or \"max_length\"",
                                     config.padding));
    }
    if (config.type == "wordpiece") return detail::make_wordpiece(config, file_bytes);
    if (config.type == "sentencepiece") return detail::make_sentencepiece(config, std::move(file_bytes));
    throw ModelError(fmt::format(
        "unknown tokenizer type \"{}\": use \"wordpiece\" or \"sentencepiece\"", config.type));
}

}  // namespace fstore
