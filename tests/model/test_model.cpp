// ClipModel: archive validation, device/precision rules, encode shapes, half output, and
// parity with Python's torch.jit on the same archive (fixtures from make_fixtures.py).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fstore/error.hpp"
#include "fstore/half.hpp"
#include "fstore/model.hpp"

namespace fstore {
namespace {

using ::testing::HasSubstr;

const std::string tiny = std::string(FSTORE_SOURCE_DIR) + "/models/tiny.pt";
std::string fixture(const std::string& name) { return std::string(FSTORE_MODEL_FIXTURES) + "/" + name; }

template <class T>
std::vector<T> read_bin(const std::string& name) {
    std::ifstream in(fixture(name), std::ios::binary | std::ios::ate);
    EXPECT_TRUE(in) << name;
    const auto bytes = static_cast<std::size_t>(in.tellg());
    std::vector<T> v(bytes / sizeof(T));
    in.seekg(0);
    in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(bytes));
    return v;
}

ModelOptions cpu() {
    ModelOptions o;
    o.device = "cpu";
    o.threads = 1;
    return o;
}

// Expects load(path) to throw E with a message containing `text`, on one line.
template <class E>
void expect_load_error(const std::string& path, const std::string& text) {
    try {
        ClipModel::load(path, cpu());
        FAIL() << "no error for " << path;
    } catch (const E& e) {
        EXPECT_THAT(e.what(), HasSubstr(text)) << path;
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
}

float norm(const float* v, std::int64_t n) {
    double s = 0;
    for (std::int64_t i = 0; i < n; ++i) s += static_cast<double>(v[i]) * v[i];
    return static_cast<float>(std::sqrt(s));
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    float m = 0;
    for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(a[i] - b[i]));
    return m;
}

TEST(ModelLoad, TinyConfigAndScalars) {
    const auto model = ClipModel::load(tiny, cpu());
    const auto& c = model.config();
    EXPECT_EQ(c.format, "fstore-clip/1");
    EXPECT_EQ(c.name, "fstore-test-tiny");
    EXPECT_EQ(c.embed_dim, 32);
    EXPECT_EQ(c.image_tokens, 16);
    EXPECT_EQ(c.image_size, 32);
    EXPECT_EQ(c.context_length, 32);
    EXPECT_EQ(c.resample, "bicubic");
    EXPECT_FLOAT_EQ(c.image_mean[1], 0.5f);
    EXPECT_EQ(c.tokenizer_type, "wordpiece");
    EXPECT_EQ(c.tokenizer_file, "fstore/vocab.txt");
    EXPECT_EQ(c.tokenizer_bytes.rfind("[PAD]\n[UNK]\n[CLS]\n[SEP]\n", 0), 0u);
    EXPECT_THAT(c.tokenizer_json, HasSubstr("\"pad_token\":\"[PAD]\""));
    const auto& s = model.logit_scalars();
    ASSERT_TRUE(s.logit_scale && s.logit_bias && s.concept_logit_scale && s.concept_logit_bias);
    EXPECT_NEAR(*s.logit_scale, std::log(10.0), 1e-6);
    EXPECT_NEAR(*s.logit_bias, -10.0, 1e-6);
    EXPECT_EQ(model.device(), "cpu");
    EXPECT_EQ(model.threads(), 1);
}

TEST(ModelLoad, ArchiveHashMatchesPython) {
    const auto model = ClipModel::load(tiny, cpu());
    std::ifstream in(fixture("tiny_sha256.txt"));
    std::string expected;
    in >> expected;
    EXPECT_EQ(model.archive_sha256(), expected);
}

TEST(ModelLoad, AbsentScalarsStayEmpty) {
    const auto model = ClipModel::load(fixture("no_scalars.pt"), cpu());
    EXPECT_FALSE(model.logit_scalars().logit_scale);
    EXPECT_FALSE(model.logit_scalars().concept_logit_bias);
}

TEST(ModelLoad, Errors) {
    expect_load_error<NotFoundError>(fixture("does_not_exist.pt"), "scripts/export_conceptclip.py");
    expect_load_error<NotFoundError>(FSTORE_MODEL_FIXTURES, "is a directory");
    const std::filesystem::path loop = fixture("loop.pt");
    std::filesystem::remove(loop);
    std::filesystem::create_symlink(loop, loop);
    expect_load_error<NotFoundError>(loop.string(), "loop of symbolic links");
    std::filesystem::remove(loop);
    expect_load_error<ModelError>(fixture("not_zip.pt"), "not a zip file");
    expect_load_error<ModelError>(fixture("torch_save.pt"), "not a TorchScript archive");
    expect_load_error<ModelError>(fixture("no_config.pt"), "without fstore/config.json");
    expect_load_error<ModelError>(fixture("missing_key.pt"), "has no \"image_size\"");
    expect_load_error<ModelError>(fixture("extra_key.pt"), "unknown key \"color\"");
    expect_load_error<ModelError>(fixture("bad_format.pt"), "fstore-clip/9");
    expect_load_error<ModelError>(fixture("bad_tokenizer_file.pt"), "fstore/missing.txt");
    expect_load_error<ModelError>(fixture("wrong_dim.pt"), "embed_dim 16");
    expect_load_error<ModelError>(fixture("wrong_tokens.pt"), "[2,20,32]");
    expect_load_error<ModelError>(fixture("frozen_batch.pt"), "batch dimension is fixed");
    expect_load_error<ModelError>(fixture("meta_output.pt"), "cannot be copied out");
    expect_load_error<ModelError>(fixture("complex_output.pt"), "cls of type ComplexFloat");
    expect_load_error<ModelError>(fixture("stale_crc.pt"), "is corrupt");
    expect_load_error<ModelError>(fixture("no_encode_text.pt"), "no method encode_text");
    expect_load_error<ModelError>(fixture("unnormalized.pt"), "L2-normalized");
}

TEST(ModelEncode, NonFiniteOutputIsRefusedBeforeTheCallerSeesIt) {
    auto model = ClipModel::load(fixture("nan_bright.pt"), cpu());  // the probe passes
    const auto& c = model.config();
    const auto per_image = static_cast<std::size_t>(3 * c.image_size * c.image_size);
    std::vector<float> dark(2 * per_image, 0.0f), bright(2 * per_image, 1.0f);
    std::vector<float> cls(2 * c.embed_dim), tokens(static_cast<std::size_t>(2 * c.image_tokens * c.embed_dim));
    EXPECT_NO_THROW(model.encode_images(dark.data(), 2, {OutputType::float32, cls.data(), tokens.data()}));
    try {
        model.encode_images(bright.data(), 2, {OutputType::float32, cls.data(), tokens.data()});
        ADD_FAILURE() << "NaN output accepted";
    } catch (const ModelError& e) {
        EXPECT_THAT(e.what(), HasSubstr("NaN or infinite"));
        EXPECT_THAT(e.what(), HasSubstr("nothing of this batch is stored"));
    }
}

TEST(ModelLoad, DeviceAndPrecisionRules) {
    ModelOptions o = cpu();
    o.precision = Precision::fp16;
    EXPECT_THROW(ClipModel::load(tiny, o), UsageError);
    o.precision = Precision::bf16;
    EXPECT_THROW(ClipModel::load(tiny, o), UsageError);
    o = cpu();
    o.device = "gpu";
    EXPECT_THROW(ClipModel::load(tiny, o), UsageError);
    o.device = "cuda:x";
    EXPECT_THROW(ClipModel::load(tiny, o), UsageError);
    o.device = "cuda";
    if (cuda_available()) {
        EXPECT_EQ(ClipModel::load(tiny, o).device(), "cuda:0");
    } else {
        EXPECT_THROW(ClipModel::load(tiny, o), UsageError);  // like fp16 on CPU: exit 2
        o.device = "auto";
        EXPECT_EQ(ClipModel::load(tiny, o).device(), "cpu");
    }
    EXPECT_EQ(parse_precision("bf16"), Precision::bf16);
    EXPECT_THROW(parse_precision("fp8"), UsageError);
}

TEST(ModelConfigParse, RejectsBadValues) {
    const std::string good = R"({"format": "fstore-clip/1", "name": "x", "embed_dim": 8, "image_tokens": 4,
        "image_size": 16, "resample": "bicubic", "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "context_length": 16, "tokenizer": {"type": "sentencepiece", "file": "fstore/spiece.model",
        "lowercase": false, "padding": "max_length", "add_bos": false, "add_eos": true, "pad_id": 1}})";
    const auto c = parse_model_config(good, "t");
    EXPECT_EQ(c.tokenizer_type, "sentencepiece");
    EXPECT_EQ(c.tokenizer_file, "fstore/spiece.model");
    auto bad = [&](const std::string& from, const std::string& to, const std::string& text) {
        std::string j = good;
        const auto at = j.find(from);
        ASSERT_NE(at, std::string::npos) << from;
        j.replace(at, from.size(), to);
        try {
            parse_model_config(j, "t");
            ADD_FAILURE() << "accepted " << to;
        } catch (const ModelError& e) {
            EXPECT_THAT(e.what(), HasSubstr(text));
        }
    };
    bad("\"embed_dim\": 8", "\"embed_dim\": -8", "embed_dim");
    bad("\"embed_dim\": 8", "\"embed_dim\": 8.5", "embed_dim");
    bad("\"image_std\": [0.5, 0.5, 0.5]", "\"image_std\": [0.5, 0, 0.5]", "image_std");
    bad("\"image_mean\": [0.5, 0.5, 0.5]", "\"image_mean\": [0.5, 0.5]", "image_mean");
    bad("\"resample\": \"bicubic\"", "\"resample\": \"nearest\"", "resample");
    bad("\"type\": \"sentencepiece\"", "\"type\": \"bpe\"", "tokenizer.type");
    bad("\"padding\": \"max_length\"", "\"padding\": \"none\"", "padding");
    bad("\"pad_id\": 1", "\"pad_id\": 1, \"cls_token\": \"[CLS]\"", "unknown key \"cls_token\"");
    bad("\"format\"", "\"formt\"", "has no \"format\"");
    bad("\"context_length\": 16", "\"context_length\": 1", "at least 2");
    bad("\"embed_dim\": 8, \"image_tokens\": 4", "\"embed_dim\": 65536, \"image_tokens\": 1048576",
        "values per image");
    EXPECT_THROW(parse_model_config("[1, 2]", "t"), ModelError);
    EXPECT_THROW(parse_model_config("{\"format\": ", "t"), ModelError);
}

class TinyModel : public ::testing::Test {
protected:
    static void SetUpTestSuite() { model_ = new ClipModel(ClipModel::load(tiny, cpu())); }
    static void TearDownTestSuite() {
        delete model_;
        model_ = nullptr;
    }
    static ClipModel* model_;
};
ClipModel* TinyModel::model_ = nullptr;

TEST_F(TinyModel, ImageParityWithPython) {
    const auto pixels = read_bin<float>("ref_pixels.bin");
    ASSERT_EQ(pixels.size(), 3u * 3 * 32 * 32);
    const auto e = model_->encode_images(pixels.data(), 3);
    EXPECT_EQ(e.batch, 3);
    EXPECT_EQ(e.tokens, 16);
    EXPECT_EQ(e.dim, 32);
    EXPECT_TRUE(e.cls_f16.empty());
    EXPECT_LT(max_abs_diff(e.cls_f32, read_bin<float>("ref_image_cls.bin")), 1e-5f);
    EXPECT_LT(max_abs_diff(e.tokens_f32, read_bin<float>("ref_image_tokens.bin")), 1e-5f);
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(norm(e.cls_f32.data() + i * 32, 32), 1.0f, 1e-5f);
}

TEST_F(TinyModel, TextParityWithPython) {
    const auto ids = read_bin<std::int64_t>("ref_ids.bin");
    ASSERT_EQ(ids.size(), 12u);
    const auto e = model_->encode_texts(ids.data(), 2, 6);
    EXPECT_EQ(e.tokens, 6);
    EXPECT_LT(max_abs_diff(e.cls_f32, read_bin<float>("ref_text_cls.bin")), 1e-5f);
    EXPECT_LT(max_abs_diff(e.tokens_f32, read_bin<float>("ref_text_tokens.bin")), 1e-5f);
    for (int i = 0; i < 2; ++i) EXPECT_NEAR(norm(e.cls_f32.data() + i * 32, 32), 1.0f, 1e-5f);
}

TEST_F(TinyModel, BatchRowsAreIndependent) {
    const auto pixels = read_bin<float>("ref_pixels.bin");
    const auto all = model_->encode_images(pixels.data(), 3);
    const auto last = model_->encode_images(pixels.data() + 2 * 3 * 32 * 32, 1);
    for (int i = 0; i < 32; ++i) EXPECT_NEAR(last.cls_f32[i], all.cls_f32[2 * 32 + i], 1e-5f);
}

TEST_F(TinyModel, HalfOutputIsFloatOutputRounded) {
    const auto pixels = read_bin<float>("ref_pixels.bin");
    const auto f = model_->encode_images(pixels.data(), 3, OutputType::float32);
    const auto h = model_->encode_images(pixels.data(), 3, OutputType::float16);
    ASSERT_EQ(h.tokens_f16.size(), f.tokens_f32.size());
    EXPECT_TRUE(h.tokens_f32.empty());
    std::vector<std::uint16_t> expected(f.tokens_f32.size());
    floats_to_halves(f.tokens_f32.data(), expected.data(), expected.size());
    EXPECT_EQ(h.tokens_f16, expected);
    expected.resize(f.cls_f32.size());
    floats_to_halves(f.cls_f32.data(), expected.data(), expected.size());
    EXPECT_EQ(h.cls_f16, expected);
}

TEST_F(TinyModel, EncodesIntoCallerBuffers) {
    const auto ids = read_bin<std::int64_t>("ref_ids.bin");
    std::vector<std::uint16_t> cls(2 * 32, 0), tokens(2 * 6 * 32, 0);
    model_->encode_texts(ids.data(), 2, 6, {OutputType::float16, cls.data(), tokens.data()});
    const auto ref = read_bin<float>("ref_text_tokens.bin");
    for (std::size_t i = 0; i < ref.size(); ++i) {
        ASSERT_NEAR(half_to_float(tokens[i]), ref[i], std::abs(ref[i]) * 1e-3f + 1e-4f) << i;
    }
    EXPECT_NE(cls[0], 0);
}

TEST_F(TinyModel, RejectsTooLongOrEmptyInput) {
    std::vector<std::int64_t> ids(33, 5);
    EXPECT_THROW(model_->encode_texts(ids.data(), 1, 33), UsageError);
    EXPECT_THROW(model_->encode_texts(ids.data(), 0, 3), UsageError);
    EXPECT_THROW(model_->encode_images(nullptr, 0), UsageError);
    // An id beyond the vocabulary is the model's failure, reported as a ModelError.
    ids.assign(4, 1000000);
    try {
        model_->encode_texts(ids.data(), 1, 4);
        ADD_FAILURE() << "no error for an out-of-vocabulary id";
    } catch (const ModelError& e) {
        EXPECT_THAT(e.what(), HasSubstr("index out of range"));
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace fstore
