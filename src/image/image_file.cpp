// Image file decoding: OpenCV's imgcodecs, or nothing in a build without OpenCV.
#include "fstore/image_file.hpp"

#include <filesystem>

#include "fstore/error.hpp"

#if FSTORE_WITH_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace fstore {

bool image_files_supported() noexcept { return FSTORE_WITH_OPENCV != 0; }

std::string image_files_unsupported_reason() {
    return "this fstore was built without OpenCV (-DFSTORE_WITH_OPENCV=OFF) and decodes no image files: "
           "rebuild it with OpenCV, or pack the images into a MedMNIST-style .npz";
}

std::string decode_image_file(const std::string& path, DecodedImage& out) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) return "file not found";
#if FSTORE_WITH_OPENCV
    cv::Mat image;
    try {
        // UNCHANGED keeps the depth visible, so 16-bit files are refused, not silently scaled.
        image = cv::imread(path, cv::IMREAD_UNCHANGED);
    } catch (const cv::Exception& e) {
        return std::string("OpenCV failed: ") + e.what();
    }
    if (image.empty()) return "not a readable image (OpenCV cannot decode it)";
    if (image.depth() != CV_8U) {
        throw DataError("image '" + path + "' has " + std::to_string(8 * image.elemSize1()) +
                        "-bit samples: only 8-bit images are supported; convert it to 8 bits");
    }
    const int channels = image.channels();
    if (channels < 1 || channels > 4) {
        throw DataError("image '" + path + "' has " + std::to_string(channels) +
                        " channels: use gray, RGB or RGBA images");
    }
    out.height = image.rows;
    out.width = image.cols;
    out.channels = channels <= 2 ? 1 : 3;
    out.pixels.resize(static_cast<std::size_t>(image.rows) * image.cols * out.channels);
    // Straight into the caller's buffer; gray + alpha keeps the gray, RGBA drops the alpha,
    // as PIL's convert("L") / convert("RGB") do.
    cv::Mat dst(image.rows, image.cols, CV_8UC(out.channels), out.pixels.data());
    switch (channels) {
        case 1: image.copyTo(dst); break;
        case 2: cv::extractChannel(image, dst, 0); break;
        case 3: cv::cvtColor(image, dst, cv::COLOR_BGR2RGB); break;
        default: cv::cvtColor(image, dst, cv::COLOR_BGRA2RGB); break;
    }
    return "";
#else
    (void)out;
    return image_files_unsupported_reason();
#endif
}

}  // namespace fstore
