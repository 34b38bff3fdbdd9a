// The image decoder of a build without OpenCV (-DFSTORE_WITH_OPENCV=OFF): this binary
// compiles src/image/image_file.cpp itself with FSTORE_WITH_OPENCV=0, so the suite checks
// that configuration without a second build of the whole project.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fstore/image_file.hpp"

namespace fs = std::filesystem;
using ::testing::HasSubstr;

TEST(ImageFileWithoutOpenCV, DecodesNothingAndNamesTheFix) {
    EXPECT_FALSE(fstore::image_files_supported());
    const std::string reason = fstore::image_files_unsupported_reason();
    EXPECT_THAT(reason, HasSubstr("built without OpenCV (-DFSTORE_WITH_OPENCV=OFF)"));
    EXPECT_THAT(reason, HasSubstr("rebuild it with OpenCV, or pack the images into a MedMNIST-style .npz"));

    fstore::DecodedImage image;
    EXPECT_EQ(fstore::decode_image_file("/nonexistent/cell.png", image), "file not found");
    const fs::path path = fs::temp_directory_path() / ("fstore_no_opencv_" + std::to_string(::getpid()) + ".png");
    std::ofstream(path, std::ios::binary) << "\x89PNG\r\n\x1a\n";
    EXPECT_EQ(fstore::decode_image_file(path.string(), image), reason);
    fs::remove(path);
}
