// Image file decoding as PIL's Image.open(path).convert("RGB") sees the pixels: PNG and
// JPEG through libpng and libjpeg (image_codecs.cpp), the rest through OpenCV's imgcodecs
// with the corrections below; nothing in a build without OpenCV.
#include "fstore/image_file.hpp"

#include <cctype>
#include <cerrno>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <utility>

#include "fstore/error.hpp"

#if FSTORE_WITH_OPENCV
#include <mutex>

#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "image_codecs.hpp"
#endif

namespace fstore {

bool image_files_supported() noexcept { return FSTORE_WITH_OPENCV != 0; }

std::string image_files_unsupported_reason() {
    return "this fstore was built without OpenCV (-DFSTORE_WITH_OPENCV=OFF) and decodes no image files: "
           "rebuild it with OpenCV, or pack the images into a MedMNIST-style .npz";
}

namespace {

// "" with the whole file in `bytes`, else why it cannot be read.
std::string read_file(const std::string& path, std::vector<std::uint8_t>& bytes) {
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (!std::filesystem::exists(status)) return "file not found";
    if (std::filesystem::is_directory(status)) return "a directory, not an image file";
    if (!std::filesystem::is_regular_file(status)) return "not a regular file";
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::string("cannot open it (") + std::strerror(errno) + ")";
    in.seekg(0, std::ios::end);
    const auto size = static_cast<std::streamoff>(in.tellg());
    in.seekg(0);
    bytes.resize(size > 0 ? static_cast<std::size_t>(size) : 0);
    if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size)) return "cannot read it";
    if (bytes.empty()) return "an empty file";
    return "";
}

#if FSTORE_WITH_OPENCV

bool starts_with(const std::vector<std::uint8_t>& bytes, const char* magic, std::size_t length) {
    return bytes.size() >= length && std::memcmp(bytes.data(), magic, length) == 0;
}

bool is_tiff(const std::vector<std::uint8_t>& bytes) {
    return starts_with(bytes, "II*\0", 4) || starts_with(bytes, "MM\0*", 4);
}

// Little-endian header fields (BMP, WebP, little-endian TIFF); the caller checks the size.
std::uint32_t le16(const std::vector<std::uint8_t>& bytes, std::size_t at) {
    return static_cast<std::uint32_t>(bytes[at] | (bytes[at + 1] << 8));
}
std::uint32_t le32(const std::vector<std::uint8_t>& bytes, std::size_t at) {
    return le16(bytes, at) | (le16(bytes, at + 2) << 16);
}

// ---- where OpenCV's decoders differ from PIL's ------------------------------------------

// A PNM header: P1..P6, width, height and (but for the bitmaps P1/P4) maxval.
struct PnmHeader {
    char kind = 0;
    std::uint64_t width = 0, height = 0, maxval = 0;
};

std::optional<PnmHeader> pnm_header(const std::vector<std::uint8_t>& bytes) {
    if (bytes.size() < 3 || bytes[0] != 'P' || bytes[1] < '1' || bytes[1] > '6') return std::nullopt;
    PnmHeader header;
    header.kind = static_cast<char>(bytes[1]);
    const bool bitmap = header.kind == '1' || header.kind == '4';
    std::uint64_t* fields[3] = {&header.width, &header.height, &header.maxval};
    std::size_t at = 2;
    for (int f = 0; f < (bitmap ? 2 : 3); ++f) {
        while (at < bytes.size()) {  // whitespace and comments
            if (bytes[at] == '#') {
                while (at < bytes.size() && bytes[at] != '\n' && bytes[at] != '\r') ++at;
            } else if (std::isspace(bytes[at])) {
                ++at;
            } else {
                break;
            }
        }
        if (at >= bytes.size() || !std::isdigit(bytes[at])) return std::nullopt;
        std::uint64_t value = 0;
        for (; at < bytes.size() && std::isdigit(bytes[at]); ++at) {
            value = std::min<std::uint64_t>(value * 10 + (bytes[at] - '0'), std::uint64_t{1} << 40);  // no overflow
        }
        *fields[f] = value;
    }
    return header;
}

// PNM with a maxval below 255. PIL scales every sample to round(v / maxval * 255) (Python's
// round: ties to even). OpenCV keeps binary samples (P5/P6) raw and scales ASCII ones
// (P2/P3) to v * 255 / maxval, truncated. Returns the maxval, 0 when the file has no such
// maxval (255, a bitmap, or not parsable here: OpenCV's result then stands); `ascii` says
// which of the two OpenCV did.
int pnm_small_maxval(const std::vector<std::uint8_t>& bytes, bool& ascii) {
    const auto header = pnm_header(bytes);
    if (!header || header->kind == '1' || header->kind == '4') return 0;
    ascii = header->kind == '2' || header->kind == '3';
    return header->maxval > 0 && header->maxval < 255 ? static_cast<int>(header->maxval) : 0;
}

// The width and height a BMP, PNM, WebP or TIFF header declares, read before OpenCV
// allocates them (a 1 KB RLE bitmap may declare 32767 x 32767 pixels); nullopt for other
// formats or a header not parsable here (OpenCV's own checks then apply).
std::optional<std::pair<std::uint64_t, std::uint64_t>> declared_size(const std::vector<std::uint8_t>& bytes) {
    if (bytes.size() >= 26 && bytes[0] == 'B' && bytes[1] == 'M') {
        if (le32(bytes, 14) == 12) return std::make_pair<std::uint64_t, std::uint64_t>(le16(bytes, 18), le16(bytes, 20));  // OS/2
        const auto width = static_cast<std::int32_t>(le32(bytes, 18)), height = static_cast<std::int32_t>(le32(bytes, 22));
        return std::make_pair(static_cast<std::uint64_t>(std::abs(static_cast<std::int64_t>(width))),
                              static_cast<std::uint64_t>(std::abs(static_cast<std::int64_t>(height))));
    }
    if (const auto pnm = pnm_header(bytes)) return std::make_pair(pnm->width, pnm->height);
    if (bytes.size() >= 30 && starts_with(bytes, "RIFF", 4) && std::memcmp(bytes.data() + 8, "WEBP", 4) == 0) {
        const auto le24 = [&](std::size_t at) { return le16(bytes, at) | (static_cast<std::uint32_t>(bytes[at + 2]) << 16); };
        if (std::memcmp(bytes.data() + 12, "VP8X", 4) == 0)
            return std::make_pair<std::uint64_t, std::uint64_t>(1 + le24(24), 1 + le24(27));
        if (std::memcmp(bytes.data() + 12, "VP8L", 4) == 0) {
            const std::uint32_t bits = le32(bytes, 21);
            return std::make_pair<std::uint64_t, std::uint64_t>(1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF));
        }
        if (std::memcmp(bytes.data() + 12, "VP8 ", 4) == 0)
            return std::make_pair<std::uint64_t, std::uint64_t>(le16(bytes, 26) & 0x3FFF, le16(bytes, 28) & 0x3FFF);
        return std::nullopt;
    }
    if (!is_tiff(bytes)) return std::nullopt;
    const bool little = bytes[0] == 'I';
    const auto u16 = [&](std::size_t at) {
        return little ? le16(bytes, at) : static_cast<std::uint32_t>((bytes[at] << 8) | bytes[at + 1]);
    };
    const auto u32 = [&](std::size_t at) { return little ? le32(bytes, at) : (u16(at) << 16) | u16(at + 2); };
    const std::uint64_t ifd = u32(4);
    if (ifd + 2 > bytes.size()) return std::nullopt;
    const std::uint32_t entries = u16(ifd);
    std::uint64_t width = 0, height = 0;
    for (std::uint32_t i = 0; i < entries && ifd + 2 + 12 * (i + 1) <= bytes.size(); ++i) {
        const std::size_t entry = ifd + 2 + 12 * i;
        const std::uint32_t tag = u16(entry), type = u16(entry + 2);
        const std::uint64_t value = type == 3 ? u16(entry + 8) : type == 4 ? u32(entry + 8) : 0;
        if (tag == 256) width = value;
        if (tag == 257) height = value;
    }
    if (width == 0 || height == 0) return std::nullopt;
    return std::make_pair(width, height);
}

void scale_pnm_samples(cv::Mat& image, int maxval, bool ascii) {
    cv::Mat table(1, 256, CV_8U);
    for (int v = 0; v < 256; ++v) table.at<std::uint8_t>(v) = static_cast<std::uint8_t>(v);
    for (int v = 0; v < 256; ++v) {
        // The same double operations as Python's v / maxval * 255.
        const double scaled = std::min(std::nearbyint(static_cast<double>(v) / maxval * 255.0), 255.0);
        if (!ascii) {
            table.at<std::uint8_t>(v) = static_cast<std::uint8_t>(scaled);
        } else if (v <= maxval) {
            table.at<std::uint8_t>(v * 255 / maxval) = static_cast<std::uint8_t>(scaled);
        }
    }
    cv::LUT(image, table, image);
}

// 16-bit BMP: OpenCV widens 5-bit samples by v << 3 (6-bit green by v << 2), PIL by
// v * 255 / 31 (/ 63). Returns the green bits (5 or 6), or 0 when the file is not one.
int bmp16_green_bits(const std::vector<std::uint8_t>& bytes) {
    if (bytes.size() < 58 || bytes[0] != 'B' || bytes[1] != 'M') return 0;
    if (le32(bytes, 14) < 40 || le16(bytes, 28) != 16) return 0;  // header size, bits per pixel
    const std::uint32_t compression = le32(bytes, 30);
    if (compression == 0) return 5;                // BI_RGB: 5-5-5
    if (compression == 3 && bytes.size() >= 66) {  // BI_BITFIELDS: masks after the 40 bytes
        if (le32(bytes, 54) == 0xF800 && le32(bytes, 58) == 0x07E0) return 6;  // 5-6-5
        if (le32(bytes, 54) == 0x7C00 && le32(bytes, 58) == 0x03E0) return 5;
    }
    return 0;
}

void widen_bmp16_samples(cv::Mat& bgr, int green_bits) {
    cv::Mat table(1, 256, CV_8UC3);
    for (int v = 0; v < 256; ++v) {
        const auto five = static_cast<std::uint8_t>((v >> 3) * 255 / 31);
        const auto green = green_bits == 6 ? static_cast<std::uint8_t>((v >> 2) * 255 / 63) : five;
        table.at<cv::Vec3b>(v) = cv::Vec3b(five, green, five);
    }
    cv::LUT(bgr, table, bgr);
}

// OpenCV reads TIFFs with alpha through libtiff's RGBA interface, which premultiplies the
// colours by alpha; PIL drops alpha and keeps the colours. Opaque pixels are the same, others
// cannot be recovered.
bool has_transparency(const cv::Mat& bgra) {
    std::vector<cv::Mat> planes;
    cv::split(bgra, planes);
    double lowest = 255;
    cv::minMaxLoc(planes[3], &lowest);
    return lowest < 255;
}

std::string decode_with_opencv(const std::string& path, const std::vector<std::uint8_t>& bytes, DecodedImage& out) {
    // OpenCV's decoders log through OpenCV's logger (libtiff's warnings included): the
    // caller reports what matters, in one line. The level is process-wide, set once.
    static std::once_flag quiet;
    std::call_once(quiet, [] { cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT); });
    if (const auto size = declared_size(bytes)) {
        if (auto too_big = detail::check_image_size(size->first, size->second); !too_big.empty()) return too_big;
    }
    cv::Mat image;
    try {
        // UNCHANGED keeps the depth visible, so 16-bit files are refused, not silently scaled.
        const cv::Mat encoded(1, static_cast<int>(bytes.size()), CV_8U, const_cast<std::uint8_t*>(bytes.data()));
        image = cv::imdecode(encoded, cv::IMREAD_UNCHANGED);
    } catch (const cv::Exception& e) {
        return std::string("OpenCV failed: ") + e.what();
    }
    if (image.empty()) return "not a readable image (OpenCV cannot decode it)";
    if (image.depth() != CV_8U) detail::refuse_sample_depth(path, static_cast<int>(8 * image.elemSize1()));
    const int channels = image.channels();
    if (channels < 1 || channels > 4) {
        throw DataError("image '" + path + "' has " + std::to_string(channels) +
                        " channels: use gray, RGB or RGBA images");
    }
    if (is_tiff(bytes) && channels == 4 && has_transparency(image)) {
        throw DataError("image '" + path + "' is a TIFF with transparency, whose colours OpenCV cannot read "
                        "unchanged: save it without alpha, or as PNG");
    }
    bool ascii = false;
    if (const int maxval = pnm_small_maxval(bytes, ascii); maxval != 0) scale_pnm_samples(image, maxval, ascii);
    if (channels == 3) {
        if (const int green_bits = bmp16_green_bits(bytes); green_bits != 0) widen_bmp16_samples(image, green_bits);
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
}

#endif  // FSTORE_WITH_OPENCV

}  // namespace

std::string decode_image_file(const std::string& path, DecodedImage& out) {
    std::vector<std::uint8_t> bytes;
    if (std::string reason = read_file(path, bytes); !reason.empty()) return reason;
#if FSTORE_WITH_OPENCV
    if (starts_with(bytes, "\x89PNG\r\n\x1a\n", 8)) return detail::decode_png(path, bytes, out);
    if (starts_with(bytes, "\xFF\xD8\xFF", 3)) return detail::decode_jpeg(path, bytes, out);
    if (starts_with(bytes, "GIF8", 4)) return "a GIF, which fstore does not decode: convert it to PNG";
    return decode_with_opencv(path, bytes, out);
#else
    (void)out;
    return image_files_unsupported_reason();
#endif
}

}  // namespace fstore
