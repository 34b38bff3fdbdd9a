// Image folder + labels CSV: decoding (PNG/JPEG, gray, BGRA, 16-bit), CSV quoting,
// split order, unreadable images (lenient and strict).
#include <gtest/gtest.h>

#include <fstream>
#include <opencv2/imgcodecs.hpp>

#include "fstore/datasets.hpp"
#include "fstore/error.hpp"
#include "test_util.hpp"

namespace fstore {
namespace {

// RGB pixels of a deterministic test image.
std::vector<std::uint8_t> pattern(int h, int w, int seed) {
    std::vector<std::uint8_t> rgb(static_cast<std::size_t>(h) * w * 3);
    for (std::size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<std::uint8_t>((i * 37 + seed * 101) % 251);
    return rgb;
}

// Writes RGB pixels with OpenCV (which expects BGR).
void write_rgb(const std::string& path, const std::vector<std::uint8_t>& rgb, int h, int w) {
    cv::Mat bgr(h, w, CV_8UC3);
    for (int y = 0; y < h; ++y) {
        for (int x = 0; x < w; ++x) {
            const auto* p = &rgb[(static_cast<std::size_t>(y) * w + x) * 3];
            bgr.at<cv::Vec3b>(y, x) = cv::Vec3b(p[2], p[1], p[0]);
        }
    }
    ASSERT_TRUE(cv::imwrite(path, bgr)) << path;
}

class FolderTest : public ::testing::Test {
protected:
    void SetUp() override {
        images = dir / "imgs";
        std::filesystem::create_directories(images);
        rgb_a = pattern(9, 7, 1);
        write_rgb(images + "/a.png", rgb_a, 9, 7);
        rgb_b = pattern(5, 6, 2);
        write_rgb(images + "/b, with comma.png", rgb_b, 5, 6);
        // BGRA: alpha must be dropped, colour order fixed.
        cv::Mat bgra(4, 3, CV_8UC4, cv::Scalar(10, 20, 30, 40));
        ASSERT_TRUE(cv::imwrite(images + "/alpha.png", bgra));
        gray = cv::Mat(6, 8, CV_8UC1);
        for (int i = 0; i < 48; ++i) gray.data[i] = static_cast<std::uint8_t>(i * 5);
        ASSERT_TRUE(cv::imwrite(images + "/gray.png", gray));
        cv::Mat solid(16, 16, CV_8UC3, cv::Scalar(50, 100, 200));  // BGR
        ASSERT_TRUE(cv::imwrite(images + "/photo.jpg", solid));
        std::ofstream(images + "/garbage.png") << "this is not an image";
        cv::Mat deep(4, 4, CV_16UC1, cv::Scalar(1000));
        ASSERT_TRUE(cv::imwrite(images + "/deep.png", deep));
    }

    std::string write_csv(const std::string& text) {
        const std::string path = dir / "labels.csv";
        std::ofstream(path, std::ios::binary) << text;
        return path;
    }

    test::TempDir dir;
    std::string images;
    std::vector<std::uint8_t> rgb_a, rgb_b;
    cv::Mat gray;
};

TEST_F(FolderTest, DecodesRowsInSplitOrderWithQuoting) {
    const auto csv = write_csv(
        "path,label,split\r\n"
        "gray.png,3,val\r\n"
        "a.png,1,train\r\n"
        "\"b, with comma.png\",\"2\",\r\n"  // empty split: train
        "alpha.png,,test\r\n"               // empty label: -1
        "photo.jpg,7,train\r\n");
    std::vector<std::string> skipped;
    ImageFolderOptions o{images, csv, {}, false, [&](const std::string& p, const std::string&) { skipped.push_back(p); }};
    auto src = open_image_folder(o);
    ASSERT_EQ(src->splits().size(), 3u);
    EXPECT_EQ(src->splits()[0].name, "train");
    EXPECT_EQ(src->splits()[0].size, 3);
    EXPECT_EQ(src->splits()[1].name, "val");
    EXPECT_EQ(src->splits()[2].name, "test");
    EXPECT_EQ(src->size(), 5);

    std::vector<Sample> out;
    ASSERT_EQ(src->next_batch(10, out), 3u);  // train only: batches do not span splits
    EXPECT_EQ(out[0].label, 1);
    EXPECT_EQ(out[0].split, "train");
    ASSERT_EQ(out[0].channels, 3);
    ASSERT_EQ(out[0].height, 9);
    ASSERT_EQ(out[0].width, 7);
    EXPECT_EQ(out[0].pixels, rgb_a);  // PNG is lossless: exact RGB
    EXPECT_EQ(out[1].label, 2);
    EXPECT_EQ(out[1].pixels, rgb_b);
    EXPECT_EQ(out[2].label, 7);
    ASSERT_EQ(out[2].pixels.size(), 16u * 16u * 3u);
    EXPECT_NEAR(out[2].pixels[0], 200, 3);  // R (written as BGR 50,100,200)
    EXPECT_NEAR(out[2].pixels[1], 100, 3);
    EXPECT_NEAR(out[2].pixels[2], 50, 3);

    ASSERT_EQ(src->next_batch(10, out), 1u);
    EXPECT_EQ(out[0].split, "val");
    EXPECT_EQ(out[0].label, 3);
    EXPECT_EQ(out[0].channels, 1);
    EXPECT_TRUE(std::equal(out[0].pixels.begin(), out[0].pixels.end(), gray.data));

    ASSERT_EQ(src->next_batch(10, out), 1u);
    EXPECT_EQ(out[0].split, "test");
    EXPECT_EQ(out[0].label, -1);
    ASSERT_EQ(out[0].channels, 3);
    EXPECT_EQ(out[0].pixels[0], 30);  // R of BGRA (10,20,30,40)
    EXPECT_EQ(out[0].pixels[1], 20);
    EXPECT_EQ(out[0].pixels[2], 10);
    EXPECT_EQ(src->next_batch(10, out), 0u);
    EXPECT_TRUE(skipped.empty());
    EXPECT_EQ(src->position(), 5);
}

TEST_F(FolderTest, UnreadableImagesAreReportedAndSkippedOrFatalInStrictMode) {
    const auto csv = write_csv("label,path\n0,a.png\n1,garbage.png\n2,missing.png\n3,gray.png\n");
    std::vector<std::pair<std::string, std::string>> skipped;
    ImageFolderOptions o{images, csv, {}, false,
                         [&](const std::string& p, const std::string& r) { skipped.emplace_back(p, r); }};
    auto src = open_image_folder(o);
    std::vector<Sample> out;
    ASSERT_EQ(src->next_batch(10, out), 2u);
    EXPECT_EQ(out[0].label, 0);
    EXPECT_EQ(out[1].label, 3);
    ASSERT_EQ(skipped.size(), 2u);
    EXPECT_NE(skipped[0].first.find("garbage.png"), std::string::npos);
    EXPECT_NE(skipped[1].first.find("missing.png"), std::string::npos);
    EXPECT_NE(skipped[1].second.find("not found"), std::string::npos) << skipped[1].second;

    // Resume: skip counts readable images only.
    auto again = open_image_folder(o);
    EXPECT_EQ(again->skip(1), 1);
    ASSERT_EQ(again->next_batch(10, out), 1u);
    EXPECT_EQ(out[0].label, 3);

    o.strict = true;
    auto strict = open_image_folder(o);
    EXPECT_THROW(strict->next_batch(10, out), DataError);
}

TEST_F(FolderTest, SixteenBitImagesAreDataErrors) {
    auto src = open_image_folder({images, write_csv("path,label\ndeep.png,1\n"), {}, false, nullptr});
    std::vector<Sample> out;
    EXPECT_THROW(src->next_batch(1, out), DataError);
}

TEST_F(FolderTest, SplitSelectionAndOrder) {
    const auto csv = write_csv("path,label,split\na.png,0,train\ngray.png,1,val\nalpha.png,2,extra\n");
    auto all = open_image_folder({images, csv, {}, false, nullptr});
    ASSERT_EQ(all->splits().size(), 3u);
    EXPECT_EQ(all->splits()[2].name, "extra");
    auto some = open_image_folder({images, csv, {"extra", "train"}, false, nullptr});
    ASSERT_EQ(some->splits().size(), 2u);
    EXPECT_EQ(some->current_split(), "extra");
    std::vector<Sample> out;
    ASSERT_EQ(some->next_batch(5, out), 1u);
    EXPECT_EQ(out[0].label, 2);
    ASSERT_EQ(some->next_batch(5, out), 1u);
    EXPECT_EQ(out[0].label, 0);
    EXPECT_EQ(some->next_batch(5, out), 0u);
    // A split the CSV does not have is a usage error naming the ones it has, not an empty split.
    try {
        open_image_folder({images, csv, {"train", "tran"}, false, nullptr});
        ADD_FAILURE() << "an unknown split was accepted";
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("'tran'"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("train, val, extra"), std::string::npos) << e.what();
    }
    // A CSV of only its header lists no images: exit 7 like a folder with none readable.
    EXPECT_THROW(open_image_folder({images, write_csv("path,label,split\n"), {}, false, nullptr}), DataError);
}

TEST_F(FolderTest, BadCsvAndMissingPaths) {
    EXPECT_THROW(open_image_folder({images, write_csv("path,split\na.png,train\n"), {}, false, nullptr}), FormatError);
    EXPECT_THROW(open_image_folder({images, write_csv("path,label\n\"a.png,1\n"), {}, false, nullptr}), FormatError);
    EXPECT_THROW(open_image_folder({images, write_csv("path,label\na.png,one\n"), {}, false, nullptr}), FormatError);
    EXPECT_THROW(open_image_folder({images, write_csv("path,label\na.png,1,extra\n"), {}, false, nullptr}), FormatError);
    EXPECT_THROW(open_image_folder({images, write_csv(""), {}, false, nullptr}), FormatError);
    // A NUL byte (a UTF-16 export, or a split name HDF5 would cut short): named with its line.
    try {
        open_image_folder({images, write_csv(std::string("path,label,split\na.png,1,train\nb.png,2,x\0NaN\n", 45)),
                           {}, false, nullptr});
        ADD_FAILURE() << "no error for a NUL byte";
    } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("line 3 holds a NUL byte"), std::string::npos) << e.what();
    }
    // Split names are stored as UTF-8 and read back by name: others, and the reader's "all",
    // are refused with the line; labels take one sign.
    const auto format_error = [&](const std::string& text) {
        try {
            open_image_folder({images, write_csv(text), {}, false, nullptr});
        } catch (const FormatError& e) {
            return std::string(e.what());
        }
        return std::string("no FormatError");
    };
    EXPECT_NE(format_error("path,label,split\na.png,1,val\xE9\n").find("line 2: split 'val"), std::string::npos);
    EXPECT_NE(format_error("path,label,split\na.png,1,\xED\xA0\x80\n").find("is not UTF-8 text"), std::string::npos);
    EXPECT_NE(format_error("path,label,split\na.png,1,\xF0\x9F\x98\n").find("is not UTF-8 text"), std::string::npos);
    EXPECT_NE(format_error("path,label,split\na.png,1,train\nb.png,2,all\n").find("line 3: split 'all' is reserved"),
              std::string::npos);
    EXPECT_NE(format_error("path,label\na.png,+-5\n").find("is not an integer"), std::string::npos);
    EXPECT_EQ(open_image_folder({images, write_csv("path,label,split\na.png,+5,v\xC3\xA4l \xF0\x9F\x98\x80\n"), {},
                                 false, nullptr})->splits().at(0).name,
              "v\xC3\xA4l \xF0\x9F\x98\x80");
    EXPECT_THROW(open_image_folder({images, dir / "nope.csv", {}, false, nullptr}), NotFoundError);
    EXPECT_THROW(open_image_folder({dir / "nodir", write_csv("path,label\na.png,1\n"), {}, false, nullptr}), NotFoundError);
    // A file where a folder belongs (and the reverse) is named as such, not as missing.
    const auto csv = write_csv("path,label\na.png,1\n");
    const auto message = [](const ImageFolderOptions& o) {
        try {
            open_image_folder(o);
        } catch (const NotFoundError& e) {
            return std::string(e.what());
        }
        return std::string("no NotFoundError");
    };
    EXPECT_NE(message({csv, csv, {}, false, nullptr}).find("is not a directory"), std::string::npos);
    EXPECT_NE(message({images, images, {}, false, nullptr}).find("is a directory"), std::string::npos);
    // Quoted quotes and a quoted newline parse; the row's path keeps them.
    std::vector<std::string> skipped;
    auto src = open_image_folder({images, write_csv("path,label\n\"we\"\"ird\nname.png\",4\n"), {}, false,
                                  [&](const std::string& p, const std::string&) { skipped.push_back(p); }});
    std::vector<Sample> out;
    EXPECT_EQ(src->next_batch(1, out), 0u);
    ASSERT_EQ(skipped.size(), 1u);
    EXPECT_NE(skipped[0].find("we\"ird\nname.png"), std::string::npos) << skipped[0];
}

}  // namespace
}  // namespace fstore
