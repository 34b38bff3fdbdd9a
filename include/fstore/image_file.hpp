// Image files (PNG, JPEG, BMP, TIFF, WebP, ...) decoded into packed 8-bit pixels: what image
// folders (open_image_folder) and `fstore embed --image` read.
//
// Decoding gives the pixels PIL gives: libpng and libjpeg for PNG and JPEG, OpenCV (imgcodecs)
// for the rest, the only use fstore makes of OpenCV. A build configured
// with -DFSTORE_WITH_OPENCV=OFF, for a machine that has no OpenCV (a GPU node with only
// LibTorch, say), decodes no image files: image_files_supported() is false and the callers
// refuse image folders and --image up front. MedMNIST .npz datasets need no decoder.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fstore {

struct DecodedImage {
    int height = 0;
    int width = 0;
    int channels = 0;                  // 1 (gray, also from gray + alpha) or 3 (RGB, also from RGBA)
    std::vector<std::uint8_t> pixels;  // height x width x channels, row-major
};

// Whether this build decodes image files (false when built without OpenCV).
bool image_files_supported() noexcept;

// Why this build cannot read image files, with the fix; for the callers' error messages.
std::string image_files_unsupported_reason();

// Decodes `path` into `out`, reusing its pixel buffer. Returns "" on success; otherwise why
// the file is not a readable image ("file not found", "not a readable image ...") and leaves
// `out` unspecified: the caller decides whether that skips the image or fails. Throws
// DataError for an image it can decode but fstore does not take (more than 8 bits per sample,
// or more than 4 channels).
std::string decode_image_file(const std::string& path, DecodedImage& out);

}  // namespace fstore
