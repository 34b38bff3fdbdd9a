// ClipModel: a CLIP-family model loaded from an fstore TorchScript archive.
//
// The archive (docs/model-format.md) is one `torch.jit.save` file that carries everything:
// the methods encode_image / encode_text, the learned logit scalars, fstore/config.json
// (image size, normalization, embedding sizes, tokenizer settings) and the tokenizer file.
// Nothing is looked up elsewhere at run time.
//
// This is the only module that includes LibTorch. Its interface is plain C++: callers pass
// float pixel buffers and int64 token ids, and get float32 or half (uint16 bit pattern)
// buffers back, on the CPU. Casting to half happens on the device before the copy, so a GPU
// run moves half the bytes. `load` validates the archive once, completely (config key set,
// methods, tokenizer file, a probe forward whose shapes must match the config), so a bad
// archive fails at start-up with one line naming the missing piece, never mid-run.
//
// Thread safety: a ClipModel may be used from one thread at a time (encode calls reuse
// staging buffers). LibTorch parallelises inside each call (`ModelOptions::threads`).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace fstore {

enum class Precision { fp32, fp16, bf16 };

// "fp32" | "fp16" | "bf16" (UsageError otherwise), and back.
Precision parse_precision(const std::string& text);
const char* to_string(Precision precision) noexcept;

struct ModelOptions {
    std::string device = "auto";  // auto (CUDA when available) | cpu | cuda | cuda:N
    Precision precision = Precision::fp32;  // fp16/bf16 need CUDA (UsageError on CPU)
    int threads = 0;                 // LibTorch intra-op threads; 0 = hardware cores
    bool probe = true;               // run one dummy forward per method at load time
};

// fstore/config.json, parsed and validated, plus the tokenizer file it names.
struct ModelConfig {
    std::string format;  // "fstore-clip/1"
    std::string name;
    std::int64_t embed_dim = 0;       // D
    std::int64_t image_tokens = 0;    // T_img
    std::int64_t image_size = 0;      // S: encode_image takes [B,3,S,S]
    std::string resample;             // "bicubic"
    std::array<float, 3> image_mean{};
    std::array<float, 3> image_std{};
    std::int64_t context_length = 0;  // longest token sequence encode_text accepts
    std::string tokenizer_json;       // the "tokenizer" object, serialized JSON
    std::string tokenizer_type;       // "wordpiece" | "sentencepiece"
    std::string tokenizer_file;       // archive name of the tokenizer file, e.g. fstore/vocab.txt
    std::string tokenizer_bytes;      // that file's content
};

// The model's learned scalars as it holds them (scales in log space). Absent attributes
// stay empty.
struct LogitScalars {
    std::optional<double> logit_scale, logit_bias, concept_logit_scale, concept_logit_bias;
};

enum class OutputType { float32, float16 };

// Destination buffers owned by the caller: `cls` holds batch*D elements, `tokens`
// batch*T*D (T = image_tokens for images, the id length for texts), row-major, of `type`
// (float for float32, std::uint16_t half bit patterns for float16).
struct EmbeddingTarget {
    OutputType type = OutputType::float32;
    void* cls = nullptr;
    void* tokens = nullptr;
};

// Owned result of an encode call: the pair matching `type` is filled, the other is empty.
struct Embeddings {
    OutputType type = OutputType::float32;
    std::int64_t batch = 0, tokens = 0, dim = 0;
    std::vector<float> cls_f32, tokens_f32;             // [batch, dim], [batch, tokens, dim]
    std::vector<std::uint16_t> cls_f16, tokens_f16;     // same shapes, half bit patterns
};

class ClipModel {
public:
    // Loads and validates `path`. Throws NotFoundError (no such file; the message says how
    // to export ConceptCLIP), ModelError (not a TorchScript archive, missing method, bad
    // config, shapes that contradict the config, CUDA asked for but unavailable) or
    // UsageError (bad device string, fp16/bf16 on the CPU).
    static ClipModel load(const std::string& path, const ModelOptions& options = {});

    ClipModel(ClipModel&&) noexcept;
    ClipModel& operator=(ClipModel&&) noexcept;
    ~ClipModel();

    const ModelConfig& config() const noexcept;
    const LogitScalars& logit_scalars() const noexcept;
    const std::string& path() const noexcept;
    std::string device() const;  // resolved: "cpu" or "cuda:N"
    Precision precision() const noexcept;
    int threads() const noexcept;

    // SHA-256 (hex) of the archive file: identifies the model for resume checks. Reads the
    // whole file (about 1 s per GB); call once.
    std::string archive_sha256() const;

    // pixels: [batch, 3, S, S] float32, already resized and normalized (CHW per image).
    void encode_images(const float* pixels, std::int64_t batch, const EmbeddingTarget& out);
    Embeddings encode_images(const float* pixels, std::int64_t batch,
                             OutputType type = OutputType::float32);

    // ids: [batch, length] int64 row-major, length <= context_length, padded by the tokenizer.
    void encode_texts(const std::int64_t* ids, std::int64_t batch, std::int64_t length,
                      const EmbeddingTarget& out);
    Embeddings encode_texts(const std::int64_t* ids, std::int64_t batch, std::int64_t length,
                            OutputType type = OutputType::float32);

private:
    struct Impl;
    explicit ClipModel(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// Parses and validates fstore/config.json (exact key set, sane values). `origin` names the
// archive in error messages. Throws ModelError. Exposed for tests and tools.
ModelConfig parse_model_config(const std::string& json_text, const std::string& origin);

// The first step of ClipModel::load, without opening the archive: `path` is a readable
// regular file. For callers that fail fast before slow work (build, before a --download).
// Throws NotFoundError (missing, a directory, unreadable, a symbolic link loop) or
// ModelError (a pipe, FIFO or device).
void check_model_file(const std::string& path);

// SHA-256 (hex) of a file's bytes. Throws NotFoundError.
std::string file_sha256(const std::string& path);

// Whether this LibTorch build sees a CUDA device (what device "auto" resolves with).
bool cuda_available();

// ---------------------------------------------------------------------------------------
// Glue from a model's config to the text and image modules, and `fstore embed`'s logic.
// Declared here, defined in library fstore_embed (src/model/embed.cpp, no LibTorch), which
// links fstore_text and fstore_image.

class Tokenizer;           // include/fstore/tokenizer.hpp
struct PreprocessConfig;   // include/fstore/preprocess.hpp

// The tokenizer the archive describes (its config's "tokenizer" object and file bytes).
std::unique_ptr<Tokenizer> make_model_tokenizer(const ModelConfig& config);
// The archive's image processor settings (image_size, mean, std, resample).
PreprocessConfig model_preprocess_config(const ModelConfig& config);

struct EmbedRequest {
    std::vector<std::string> texts;        // encoded as one batch (padded together)
    std::vector<std::string> image_paths;  // encoded as one batch
    OutputType type = OutputType::float32;
};

struct EmbedResult {
    std::int64_t text_batch = 0, text_length = 0;
    std::vector<std::int64_t> input_ids;  // [text_batch, text_length], as given to encode_text
    Embeddings text;                       // empty (batch 0) without texts
    Embeddings image;                      // empty (batch 0) without images
};

// tokenize -> encode_texts; read -> preprocess -> encode_images. What `fstore embed` runs.
EmbedResult embed(ClipModel& model, const EmbedRequest& request);

}  // namespace fstore
