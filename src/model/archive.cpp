#include "archive.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>
#include <zip.h>

#include "fstore/digest.hpp"
#include "fstore/error.hpp"

namespace fstore {
namespace {


const char* const export_hint =
    "export ConceptCLIP with scripts/export_conceptclip.py (see docs/model-format.md), "
    "or pass models/tiny.pt to try fstore";

struct ZipCloser {
    void operator()(zip_t* z) const noexcept { zip_discard(z); }
};
using ZipHandle = std::unique_ptr<zip_t, ZipCloser>;

std::string read_member(zip_t* archive, zip_int64_t index, const std::string& path,
                        const std::string& name) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(archive, index, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
        throw ModelError(fstore::quoted(path) + ": cannot read '" + name + "' in the archive: re-export the model");
    }
    std::unique_ptr<zip_file_t, int (*)(zip_file_t*)> file(zip_fopen_index(archive, index, 0), zip_fclose);
    if (!file) {
        throw ModelError(fstore::quoted(path) + ": cannot open '" + name + "' in the archive: re-export the model");
    }
    std::string data(static_cast<std::size_t>(st.size), '\0');
    zip_int64_t got = 0;
    while (got < static_cast<zip_int64_t>(st.size)) {
        const zip_int64_t n = zip_fread(file.get(), data.data() + got, st.size - got);
        if (n <= 0) {
            throw ModelError(fstore::quoted(path) + ": '" + name + "' in the archive is truncated or corrupt: re-export the model");
        }
        got += n;
    }
    // libzip checks a member's CRC only on the read that finds its end: without this one a
    // damaged config or vocabulary would pass.
    char past_end = 0;
    if (zip_fread(file.get(), &past_end, 1) != 0) {
        throw ModelError(fstore::quoted(path) + ": '" + name + "' in the archive is corrupt (" +
                         zip_file_strerror(file.get()) + "): re-export the model");
    }
    return data;
}

// Every member name of the zip; the TorchScript folder prefix is what precedes "/data.pkl".
std::vector<std::string> member_names(zip_t* archive) {
    std::vector<std::string> names;
    const zip_int64_t count = zip_get_num_entries(archive, 0);
    for (zip_int64_t i = 0; i < count; ++i) {
        const char* name = zip_get_name(archive, i, ZIP_FL_ENC_RAW);
        names.emplace_back(name ? name : "");
    }
    return names;
}

const nlohmann::json& require(const nlohmann::json& obj, const char* key, const std::string& origin) {
    auto it = obj.find(key);
    if (it == obj.end()) {
        throw ModelError(origin + ": fstore/config.json has no \"" + key +
                         "\": re-export the model (docs/model-format.md lists the keys)");
    }
    return *it;
}

[[noreturn]] void bad_value(const std::string& origin, const std::string& key, const std::string& what) {
    throw ModelError(origin + ": fstore/config.json \"" + key + "\" " + what +
                     ": re-export the model (docs/model-format.md)");
}

std::int64_t positive_int(const nlohmann::json& obj, const char* key, const std::string& origin,
                          std::int64_t max_value) {
    const auto& v = require(obj, key, origin);
    if (!v.is_number_integer() || v.get<std::int64_t>() <= 0 || v.get<std::int64_t>() > max_value) {
        bad_value(origin, key, "must be an integer in 1.." + std::to_string(max_value) + " (got " + v.dump() + ")");
    }
    return v.get<std::int64_t>();
}

std::string nonempty_string(const nlohmann::json& obj, const char* key, const std::string& origin) {
    const auto& v = require(obj, key, origin);
    if (!v.is_string() || v.get<std::string>().empty()) {
        bad_value(origin, key, "must be a non-empty string (got " + v.dump() + ")");
    }
    return v.get<std::string>();
}

std::array<float, 3> three_floats(const nlohmann::json& obj, const char* key, const std::string& origin,
                                  bool positive) {
    const auto& v = require(obj, key, origin);
    std::array<float, 3> out{};
    if (!v.is_array() || v.size() != 3) bad_value(origin, key, "must be a list of 3 numbers (got " + v.dump() + ")");
    for (std::size_t i = 0; i < 3; ++i) {
        if (!v[i].is_number() || !std::isfinite(v[i].get<double>()) || (positive && v[i].get<double>() <= 0)) {
            bad_value(origin, key, std::string("must hold 3 finite") + (positive ? " positive" : "") +
                                       " numbers (got " + v.dump() + ")");
        }
        out[i] = v[i].get<float>();
    }
    return out;
}

void check_key_set(const nlohmann::json& obj, const std::set<std::string>& expected, const std::string& where,
                   const std::string& origin) {
    for (const auto& key : expected) require(obj, key.c_str(), origin);
    for (auto it = obj.begin(); it != obj.end(); ++it) {
        if (!expected.count(it.key())) {
            throw ModelError(origin + ": " + where + " has an unknown key \"" + it.key() +
                             "\": the key set is fixed (docs/model-format.md); re-export the model");
        }
    }
}

}  // namespace

ModelConfig parse_model_config(const std::string& json_text, const std::string& origin) {
    nlohmann::json doc;
    try {
        doc = nlohmann::json::parse(json_text);
    } catch (const nlohmann::json::exception& e) {
        throw ModelError(origin + ": fstore/config.json is not valid JSON (" + std::string(e.what()) +
                         "): re-export the model");
    }
    if (!doc.is_object()) throw ModelError(origin + ": fstore/config.json is not a JSON object: re-export the model");
    check_key_set(doc,
                  {"format", "name", "embed_dim", "image_tokens", "image_size", "resample", "image_mean",
                   "image_std", "context_length", "tokenizer"},
                  "fstore/config.json", origin);

    ModelConfig c;
    c.format = nonempty_string(doc, "format", origin);
    if (c.format != "fstore-clip/1") {
        bad_value(origin, "format", "is '" + c.format + "', this fstore reads 'fstore-clip/1'");
    }
    c.name = nonempty_string(doc, "name", origin);
    c.embed_dim = positive_int(doc, "embed_dim", origin, 1 << 16);
    c.image_tokens = positive_int(doc, "image_tokens", origin, 1 << 20);
    c.image_size = positive_int(doc, "image_size", origin, 1 << 14);
    c.resample = nonempty_string(doc, "resample", origin);
    if (c.resample != "bicubic") bad_value(origin, "resample", "is '" + c.resample + "', only 'bicubic' is supported");
    c.image_mean = three_floats(doc, "image_mean", origin, false);
    c.image_std = three_floats(doc, "image_std", origin, true);
    c.context_length = positive_int(doc, "context_length", origin, 1 << 16);
    if (c.context_length < 2) bad_value(origin, "context_length", "must be at least 2 (got 1)");
    // One image's token features are allocated whole (the load probe's included).
    constexpr std::int64_t max_image_values = std::int64_t{1} << 26;
    if (c.image_tokens * c.embed_dim > max_image_values) {
        bad_value(origin, "image_tokens", "times embed_dim is " + std::to_string(c.image_tokens * c.embed_dim) +
                                              " values per image, more than the " +
                                              std::to_string(max_image_values) + " fstore supports");
    }

    const auto& tok = doc["tokenizer"];
    if (!tok.is_object()) bad_value(origin, "tokenizer", "must be an object");
    c.tokenizer_type = nonempty_string(tok, "type", origin);
    if (c.tokenizer_type == "wordpiece") {
        check_key_set(tok, {"type", "file", "lowercase", "strip_accents", "padding", "cls_token", "sep_token",
                            "pad_token", "unk_token"},
                      "the wordpiece \"tokenizer\"", origin);
    } else if (c.tokenizer_type == "sentencepiece") {
        check_key_set(tok, {"type", "file", "lowercase", "padding", "add_bos", "add_eos", "pad_id"},
                      "the sentencepiece \"tokenizer\"", origin);
        if (!tok["pad_id"].is_number_integer() || tok["pad_id"].get<std::int64_t>() < 0) {
            bad_value(origin, "tokenizer.pad_id", "must be a non-negative integer");
        }
    } else {
        bad_value(origin, "tokenizer.type", "is '" + c.tokenizer_type + "', use 'wordpiece' or 'sentencepiece'");
    }
    const std::string padding = nonempty_string(tok, "padding", origin);
    if (padding != "longest" && padding != "max_length") {
        bad_value(origin, "tokenizer.padding", "is '" + padding + "', use 'longest' or 'max_length'");
    }
    c.tokenizer_file = nonempty_string(tok, "file", origin);
    c.tokenizer_json = tok.dump();
    return c;
}

void check_model_file(const std::string& path) {
    const std::string origin = fstore::quoted(path);
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
        throw NotFoundError("model archive " + origin + " is a directory: pass the .pt file inside it");
    }
    // A pipe (--model <(...)) or FIFO: a zip is read by seeking, and opening a FIFO with no
    // writer would hang.
    if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec)) {
        throw ModelError("model archive " + origin + " is not a regular file (a pipe, FIFO or device): "
                         "a zip archive is read by seeking; save it to a file and pass that");
    }
    if (std::ifstream(path, std::ios::binary)) return;
    const int access_error = ::access(path.c_str(), F_OK) == 0 ? 0 : errno;
    if (access_error == ELOOP) {
        throw NotFoundError("model archive " + origin + " is a loop of symbolic links: point the link at the .pt file");
    }
    if (access_error == 0 || access_error == EACCES) {
        throw NotFoundError("model archive " + origin + " is not readable (permission denied): "
                            "check its permissions and those of its directories");
    }
    throw NotFoundError("model archive " + origin + " not found: export ConceptCLIP with `/usr/bin/python3 "
                        "scripts/export_conceptclip.py --out " + path + "` (docs/model-format.md) or pass "
                        "--model PATH (tiny test models: models/tiny.pt)");
}

namespace detail {

ModelConfig read_archive_config(const std::string& path) {
    const std::string origin = fstore::quoted(path);
    check_model_file(path);
    int err = 0;
    ZipHandle archive(zip_open(path.c_str(), ZIP_RDONLY, &err));
    if (!archive) {
        throw ModelError(origin + " is not a TorchScript model archive (not a zip file): " + export_hint);
    }
    const auto names = member_names(archive.get());
    std::string prefix;
    bool has_code = false;
    for (const auto& n : names) {
        const auto slash = n.find('/');
        if (slash != std::string::npos && n.compare(slash, std::string::npos, "/data.pkl") == 0) {
            prefix = n.substr(0, slash + 1);
        }
    }
    for (const auto& n : names) {
        if (!prefix.empty() && n.rfind(prefix + "code/", 0) == 0) has_code = true;
    }
    if (prefix.empty() || !has_code) {
        throw ModelError(origin + " is a zip file but not a TorchScript archive (saved with torch.save, not "
                                  "torch.jit.save?): " + export_hint);
    }
    auto find = [&](const std::string& extra) -> zip_int64_t {
        return zip_name_locate(archive.get(), (prefix + "extra/" + extra).c_str(), ZIP_FL_ENC_RAW);
    };
    const zip_int64_t config_index = find("fstore/config.json");
    if (config_index < 0) {
        throw ModelError(origin + " is a TorchScript archive without fstore/config.json, so not an fstore model: " +
                         export_hint);
    }
    ModelConfig config = parse_model_config(read_member(archive.get(), config_index, path, "fstore/config.json"),
                                            origin);
    const zip_int64_t tok_index = find(config.tokenizer_file);
    if (tok_index < 0) {
        throw ModelError(origin + ": the tokenizer file '" + config.tokenizer_file +
                         "' named in fstore/config.json is not in the archive: re-export the model");
    }
    config.tokenizer_bytes = read_member(archive.get(), tok_index, path, config.tokenizer_file);
    if (config.tokenizer_bytes.empty()) {
        throw ModelError(origin + ": the tokenizer file '" + config.tokenizer_file + "' is empty: re-export the model");
    }
    return config;
}

std::array<std::int64_t, 2> probe_token_ids(const ModelConfig& config) {
    std::int64_t pad = 0;
    const auto tok = nlohmann::json::parse(config.tokenizer_json);
    if (config.tokenizer_type == "sentencepiece") {
        pad = tok["pad_id"].get<std::int64_t>();
    } else {
        // vocab.txt: id = line number.
        const std::string pad_token = tok["pad_token"].is_string() ? tok["pad_token"].get<std::string>() : "";
        std::size_t start = 0;
        for (std::int64_t line = 0; start < config.tokenizer_bytes.size(); ++line) {
            auto end = config.tokenizer_bytes.find('\n', start);
            if (end == std::string::npos) end = config.tokenizer_bytes.size();
            std::string token = config.tokenizer_bytes.substr(start, end - start);
            if (!token.empty() && token.back() == '\r') token.pop_back();
            if (token == pad_token) {
                pad = line;
                break;
            }
            start = end + 1;
        }
    }
    std::array<std::int64_t, 2> ids{};
    std::size_t n = 0;
    for (std::int64_t id = 1; n < ids.size(); ++id) {
        if (id != pad) ids[n++] = id;
    }
    return ids;
}

}  // namespace detail

std::string file_sha256(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw NotFoundError("cannot read " + fstore::quoted(path) + ": check the path");
    Digest sha = Digest::sha256();
    std::vector<char> buffer(1 << 20);
    while (in) {
        in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        const auto n = in.gcount();
        if (n > 0) sha.update(buffer.data(), static_cast<std::size_t>(n));
    }
    if (in.bad()) throw DataError("read error while hashing " + fstore::quoted(path) + ": check the disk");
    return sha.hex();
}

}  // namespace fstore
