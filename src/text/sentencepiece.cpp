// The SentencePiece backend, as seen from fstore_text: finds libfstore_spm.so, dlopens it
// isolated from the rest of the process and wraps its C ABI (spm_api.h). fstore_text
// itself never links libsentencepiece (docs: platform-facts.md, LibTorch + SentencePiece).
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <system_error>

#include <fmt/format.h>

#include "backends.hpp"
#include "fstore/error.hpp"
#include "spm_api.h"
#include "unicode.hpp"

#ifndef FSTORE_SPM_BUILD_PATH
#define FSTORE_SPM_BUILD_PATH ""
#endif

namespace fstore::detail {
namespace {

namespace fs = std::filesystem;

constexpr const char* kModuleName = "libfstore_spm.so";

// Where the module may be, in order: $FSTORE_SPM_MODULE alone when set; else next to the
// executable, in its ../lib and ../lib/fstore (installed layouts); else the build tree.
std::vector<fs::path> module_candidates() {
    if (const char* env = std::getenv("FSTORE_SPM_MODULE"); env && *env) return {fs::path(env)};
    std::vector<fs::path> candidates;
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        const fs::path dir = exe.parent_path();
        candidates.push_back(dir / kModuleName);
        candidates.push_back(dir / ".." / "lib" / kModuleName);
        candidates.push_back(dir / ".." / "lib" / "fstore" / kModuleName);
    }
    if (*FSTORE_SPM_BUILD_PATH) candidates.emplace_back(FSTORE_SPM_BUILD_PATH);
    return candidates;
}

struct DlClose {
    void operator()(void* handle) const noexcept { dlclose(handle); }
};

class SpmModule {
public:
    SpmModule() {
        const auto candidates = module_candidates();
        std::string tried;
        for (const auto& path : candidates) {
            std::error_code ec;
            if (!fs::is_regular_file(path, ec)) {
                tried += (tried.empty() ? "" : ", ") + path.string();
                continue;
            }
            // RTLD_DEEPBIND: the module's own libsentencepiece/protobuf symbols win over
            // LibTorch's. ASan cannot intercept a deep-bound library, so sanitized builds
            // (where LibTorch is never loaded alongside) use plain local binding.
            int flags = RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE;
#if !defined(__SANITIZE_ADDRESS__)
            flags |= RTLD_DEEPBIND;
#endif
            handle_.reset(dlopen(path.c_str(), flags));
            if (!handle_) {
                const char* why = dlerror();
                throw ModelError(fmt::format(
                    "cannot load the SentencePiece module '{}': {}: reinstall fstore or point "
                    "FSTORE_SPM_MODULE at a working libfstore_spm.so",
                    path.string(), why ? why : "unknown error"));
            }
            path_ = path.string();
            break;
        }
        if (!handle_) {
            throw ModelError(fmt::format(
                "the SentencePiece module {} was not found (looked at: {}): build the fstore_spm "
                "target, install fstore, or set FSTORE_SPM_MODULE to its path",
                kModuleName, tried));
        }
        auto version = symbol<fstore_spm_api_version_fn>("fstore_spm_api_version");
        if (version() != FSTORE_SPM_API_VERSION) {
            throw ModelError(fmt::format(
                "the SentencePiece module '{}' speaks API version {}, this fstore needs {}: "
                "install the module of the same fstore build",
                path_, version(), FSTORE_SPM_API_VERSION));
        }
        load = symbol<fstore_spm_load_fn>("fstore_spm_load");
        free_model = symbol<fstore_spm_free_fn>("fstore_spm_free");
        encode = symbol<fstore_spm_encode_fn>("fstore_spm_encode");
        free_ids = symbol<fstore_spm_free_ids_fn>("fstore_spm_free_ids");
        piece_to_id = symbol<fstore_spm_piece_to_id_fn>("fstore_spm_piece_to_id");
        special_id = symbol<fstore_spm_special_id_fn>("fstore_spm_special_id");
        vocab_size = symbol<fstore_spm_vocab_size_fn>("fstore_spm_vocab_size");
    }

    const std::string& path() const noexcept { return path_; }

    fstore_spm_load_fn load = nullptr;
    fstore_spm_free_fn free_model = nullptr;
    fstore_spm_encode_fn encode = nullptr;
    fstore_spm_free_ids_fn free_ids = nullptr;
    fstore_spm_piece_to_id_fn piece_to_id = nullptr;
    fstore_spm_special_id_fn special_id = nullptr;
    fstore_spm_vocab_size_fn vocab_size = nullptr;

private:
    template <typename Fn>
    Fn symbol(const char* name) {
        void* address = dlsym(handle_.get(), name);
        if (!address) {
            throw ModelError(fmt::format(
                "the SentencePiece module '{}' lacks {}: install the module of the same fstore build",
                path_, name));
        }
        return reinterpret_cast<Fn>(address);
    }

    std::unique_ptr<void, DlClose> handle_;
    std::string path_;
};

class SentencePieceTokenizer final : public Tokenizer {
public:
    SentencePieceTokenizer(TokenizerConfig config, const std::string& model_bytes)
        : config_(std::move(config)), module_(std::make_shared<SpmModule>()),
          model_(nullptr, ModelDeleter{module_}) {
        std::array<char, 512> error{};
        model_.reset(module_->load(model_bytes.data(), model_bytes.size(), error.data(), error.size()));
        if (!model_) {
            throw ModelError(fmt::format(
                "tokenizer model '{}' is not a valid SentencePiece model ({}): re-export the "
                "model archive with the tokenizer's .model file",
                config_.file, error.data()));
        }
        const std::int64_t size = module_->vocab_size(model_.get());
        auto special = [&](int which, const char* what, const char* key) -> std::int64_t {
            const int id = module_->special_id(model_.get(), which);
            if (id < 0) {
                throw ModelError(fmt::format(
                    "tokenizer model '{}' defines no {} token but \"{}\" is true: set it to "
                    "false in fstore/config.json or use a model with one",
                    config_.file, what, key));
            }
            return id;
        };
        if (config_.add_bos) bos_id_ = special(FSTORE_SPM_BOS, "BOS", "add_bos");
        if (config_.add_eos) eos_id_ = special(FSTORE_SPM_EOS, "EOS", "add_eos");
        pad_id_ = config_.pad_id >= 0 ? config_.pad_id : module_->special_id(model_.get(), FSTORE_SPM_PAD);
        if (pad_id_ < 0) {
            throw ModelError(fmt::format(
                "tokenizer model '{}' defines no pad id: set \"pad_id\" in fstore/config.json",
                config_.file));
        }
        if (pad_id_ >= size) {
            throw ModelError(fmt::format(
                "tokenizer \"pad_id\" {} is outside the SentencePiece vocab of {} pieces: fix "
                "fstore/config.json",
                pad_id_, size));
        }
    }

    std::vector<std::int64_t> encode(const std::string& text) const override {
        std::string input;
        if (config_.lowercase) {
            std::u32string lowered;
            for (char32_t cp : unicode::decode_utf8(text)) unicode::append_lower(cp, lowered);
            input = unicode::encode_utf8(lowered);
        }
        const std::string& source = config_.lowercase ? input : text;
        int* raw = nullptr;
        std::size_t count = 0;
        std::array<char, 512> error{};
        if (module_->encode(model_.get(), source.data(), source.size(), &raw, &count, error.data(),
                            error.size()) != 0) {
            throw ModelError(fmt::format("SentencePiece could not encode a text: {}", error.data()));
        }
        std::unique_ptr<int, fstore_spm_free_ids_fn> ids(raw, module_->free_ids);
        const std::size_t specials = (bos_id_ >= 0 ? 1 : 0) + (eos_id_ >= 0 ? 1 : 0);
        const std::size_t keep = std::min(count, static_cast<std::size_t>(config_.context_length) - specials);
        std::vector<std::int64_t> out;
        out.reserve(keep + specials);
        if (bos_id_ >= 0) out.push_back(bos_id_);
        out.insert(out.end(), raw, raw + keep);
        if (eos_id_ >= 0) out.push_back(eos_id_);
        return out;
    }

    std::int64_t pad_id() const override { return pad_id_; }

protected:
    std::int64_t padded_length() const override {
        return config_.padding == "max_length" ? config_.context_length : 0;
    }

private:
    struct ModelDeleter {
        std::shared_ptr<SpmModule> module;
        void operator()(fstore_spm* model) const noexcept { module->free_model(model); }
    };

    TokenizerConfig config_;
    std::shared_ptr<SpmModule> module_;
    std::unique_ptr<fstore_spm, ModelDeleter> model_;
    std::int64_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece(const TokenizerConfig& config, std::string model_bytes) {
    const std::int64_t specials = (config.add_bos ? 1 : 0) + (config.add_eos ? 1 : 0);
    if (config.context_length <= specials) {
        throw ModelError(fmt::format(
            "context_length {} leaves no room for text after the BOS/EOS tokens: fix fstore/config.json",
            config.context_length));
    }
    return std::make_unique<SentencePieceTokenizer>(config, model_bytes);
}

}  // namespace fstore::detail
