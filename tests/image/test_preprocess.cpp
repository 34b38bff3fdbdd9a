// PIL parity of the resizer and HF-processor parity of the normalization. The expected
// values come from PIL / numpy (gen_resize_cases.py), never from this implementation.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

#include "fstore/error.hpp"
#include "fstore/preprocess.hpp"
#include "test_util.hpp"

namespace fstore {
namespace {

using test::read_raw;

class PreprocessTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = test::cached_cases("resize", "tests/image/gen_resize_cases.py", {"tests/python/fstore_ref/preprocess.py"});
    }
    static std::string file(const std::string& name) { return dir_ + "/" + name; }
    static std::string dir_;
};
std::string PreprocessTest::dir_;

TEST_F(PreprocessTest, ResizeMatchesPilExactly) {
    std::ifstream list(file("resize.txt"));
    std::string line;
    int cases = 0;
    while (std::getline(list, line)) {
        std::istringstream in(line);
        std::string name, resample;
        int h, w, c, ow, oh;
        in >> name >> h >> w >> c >> ow >> oh >> resample;
        SCOPED_TRACE(name);
        const auto input = read_raw<std::uint8_t>(file(name + ".in"));
        const auto expected = read_raw<std::uint8_t>(file(name + ".pil"));
        ASSERT_EQ(input.size(), static_cast<std::size_t>(h) * w * c);
        ASSERT_EQ(expected.size(), static_cast<std::size_t>(oh) * ow * c);
        const auto got = resize_image({input.data(), h, w, c}, ow, oh, parse_resample(resample));
        ASSERT_EQ(got.size(), expected.size());
        std::size_t differing = 0;
        int worst = 0;
        for (std::size_t i = 0; i < got.size(); ++i) {
            const int d = std::abs(int(got[i]) - int(expected[i]));
            differing += d != 0;
            worst = std::max(worst, d);
        }
        EXPECT_EQ(differing, 0u) << "worst difference " << worst << " levels";
        ++cases;
    }
    EXPECT_GE(cases, 20);
}

TEST_F(PreprocessTest, NormalizedOutputMatchesHfProcessorReference) {
    std::ifstream list(file("preprocess.txt"));
    std::string line;
    int cases = 0;
    while (std::getline(list, line)) {
        std::istringstream in(line);
        PreprocessConfig cfg;
        std::string name;
        int h, w, c;
        in >> name >> h >> w >> c >> cfg.image_size >> cfg.resample >> cfg.mean[0] >> cfg.mean[1] >>
            cfg.mean[2] >> cfg.std[0] >> cfg.std[1] >> cfg.std[2];
        SCOPED_TRACE(name);
        const auto input = read_raw<std::uint8_t>(file(name + ".in"));
        const auto expected = read_raw<float>(file(name + ".f32"));
        Preprocessor pre(cfg);
        ASSERT_EQ(pre.output_size(), expected.size());
        std::vector<float> got(pre.output_size() + 1, -1234.0F);
        pre.run({input.data(), h, w, c}, got.data());
        EXPECT_EQ(got.back(), -1234.0F) << "wrote past output_size()";
        float worst = 0;
        for (std::size_t i = 0; i < expected.size(); ++i) worst = std::max(worst, std::fabs(got[i] - expected[i]));
        EXPECT_LE(worst, 1e-6F);
        // Running again reuses the cached resizer and gives the same floats.
        std::vector<float> again(pre.output_size());
        pre.run({input.data(), h, w, c}, again.data());
        EXPECT_TRUE(std::equal(again.begin(), again.end(), got.begin()));
        ++cases;
    }
    EXPECT_EQ(cases, 5);
}

TEST(Preprocess, GrayIsReplicatedIntoRgbPlanes) {
    std::vector<std::uint8_t> gray(20 * 30);
    for (std::size_t i = 0; i < gray.size(); ++i) gray[i] = static_cast<std::uint8_t>(i * 7);
    std::vector<std::uint8_t> rgb(gray.size() * 3);
    for (std::size_t i = 0; i < gray.size(); ++i) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = gray[i];
    Preprocessor pre({16, {0.1F, 0.2F, 0.3F}, {0.5F, 0.6F, 0.7F}, "bicubic"});
    std::vector<float> a(pre.output_size()), b(pre.output_size());
    pre.run({gray.data(), 20, 30, 1}, a.data());
    pre.run({rgb.data(), 20, 30, 3}, b.data());
    EXPECT_EQ(a, b);
    EXPECT_EQ(pre.resize_rgb({gray.data(), 20, 30, 1}), pre.resize_rgb({rgb.data(), 20, 30, 3}));
}

TEST(Preprocess, SharedResizerGivesSameResultOnSeveralThreads) {
    std::vector<std::uint8_t> img(224 * 224 * 3);
    for (std::size_t i = 0; i < img.size(); ++i) img[i] = static_cast<std::uint8_t>((i * 2654435761u) >> 24);
    const Resizer resizer(224, 224, 384, 384);
    std::vector<std::uint8_t> reference(384 * 384 * 3);
    std::vector<std::uint8_t> scratch;
    resizer.resize(img.data(), 3, reference.data(), scratch);
    std::vector<std::vector<std::uint8_t>> outs(4, std::vector<std::uint8_t>(reference.size()));
    std::vector<std::thread> threads;
    for (auto& out : outs) {
        threads.emplace_back([&resizer, &img, &out] {
            std::vector<std::uint8_t> s;
            for (int k = 0; k < 3; ++k) resizer.resize(img.data(), 3, out.data(), s);
        });
    }
    for (auto& t : threads) t.join();
    for (const auto& out : outs) EXPECT_EQ(out, reference);
}

TEST(Preprocess, RejectsBadConfigAndImages) {
    EXPECT_THROW(parse_resample("lanczos"), ModelError);
    EXPECT_EQ(parse_resample("BICUBIC"), Resample::bicubic);
    EXPECT_EQ(parse_resample("bilinear"), Resample::bilinear);
    EXPECT_THROW(Preprocessor({0, {}, {0.5F, 0.5F, 0.5F}, "bicubic"}), UsageError);
    EXPECT_THROW(Preprocessor({8, {}, {0.5F, 0.0F, 0.5F}, "bicubic"}), UsageError);
    EXPECT_THROW(Preprocessor({8, {}, {0.5F, 0.5F, 0.5F}, "nearest"}), ModelError);
    Preprocessor pre({8, {0.5F, 0.5F, 0.5F}, {0.5F, 0.5F, 0.5F}, "bicubic"});
    std::vector<float> out(pre.output_size());
    std::vector<std::uint8_t> px(4 * 4 * 5);
    EXPECT_THROW(pre.run({px.data(), 4, 4, 5}, out.data()), DataError);
    EXPECT_THROW(pre.run({px.data(), 0, 4, 3}, out.data()), DataError);
    EXPECT_THROW(pre.run({nullptr, 4, 4, 3}, out.data()), DataError);
    EXPECT_THROW(Resizer(0, 4, 8, 8), UsageError);
}

TEST(Preprocess, ConstantImageNormalizesToKnownValue) {
    // (200/255 - 0.5) / 0.5, computed independently.
    std::vector<std::uint8_t> px(9 * 13 * 3, 200);
    Preprocessor pre({384, {0.5F, 0.5F, 0.5F}, {0.5F, 0.5F, 0.5F}, "bicubic"});
    std::vector<float> out(pre.output_size());
    pre.run({px.data(), 9, 13, 3}, out.data());
    for (float v : out) ASSERT_NEAR(v, (200.0 / 255.0 - 0.5) / 0.5, 1e-6);
}

}  // namespace
}  // namespace fstore
