// The decoders fstore runs itself instead of OpenCV's, for the formats where OpenCV's
// differ from PIL's (a truncated JPEG decoded into grey rows, CMYK converted another way)
// or talk on stderr (libpng and libjpeg warnings). Internal to fstore_image.
//
// Each returns "" on success, with `out` filled as decode_image_file() documents, or why
// `bytes` are not a readable image; each throws DataError for an image it can read but
// fstore does not take (more than 8 bits per sample).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fstore/image_file.hpp"

namespace fstore::detail {

// PIL refuses images of more pixels than this (Image.MAX_IMAGE_PIXELS * 2, its
// "decompression bomb" error); fstore does too, before allocating them.
inline constexpr std::uint64_t max_image_pixels = 2ull * 89478485ull;

// Throws the DataError for an image of `bits`-bit samples (fstore takes 8-bit images only).
[[noreturn]] void refuse_sample_depth(const std::string& path, int bits);

// "" when width x height is within max_image_pixels, else why the image is refused.
std::string check_image_size(std::uint64_t width, std::uint64_t height);

// PNG through libpng: palettes expanded as PIL does (an index past the PLTE entries is
// gray (i, i, i), not black), 1/2/4-bit gray scaled to 8 bits, alpha dropped.
std::string decode_png(const std::string& path, const std::vector<std::uint8_t>& bytes, DecodedImage& out);

// JPEG through libjpeg: gray stays gray, CMYK/YCCK become RGB with PIL's formula (Adobe
// polarity, as PIL assumes). A file that ends before its image data does is refused, as PIL
// refuses it ("image file is truncated"); libjpeg alone would fill the rest with grey.
std::string decode_jpeg(const std::string& path, const std::vector<std::uint8_t>& bytes, DecodedImage& out);

}  // namespace fstore::detail
