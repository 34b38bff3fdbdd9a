// PNG and JPEG decoding through libpng and libjpeg, the way PIL decodes them.
//
// Both libraries report errors by longjmp. Every object with a destructor in the decoding
// functions is constructed before their setjmp, so a longjmp back to it skips none, and no
// local object is changed between the setjmp and a call that may longjmp (such a local's
// value is indeterminate after the jump): rows are decoded straight into the caller's
// `out`, scratch space included (a palette image's indices too). The callbacks only write
// into fixed buffers.
#include "image_codecs.hpp"

#include <array>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <new>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "fstore/error.hpp"

namespace fstore::detail {

std::string check_image_size(std::uint64_t width, std::uint64_t height) {
    if (width == 0 || height == 0) return "an image of no pixels";
    if (width > max_image_pixels / height) {
        return std::to_string(width) + "x" + std::to_string(height) + " pixels, more than PIL opens (" +
               std::to_string(max_image_pixels) + "): downscale it";
    }
    return "";
}

void refuse_sample_depth(const std::string& path, int bits) {
    throw DataError("image '" + path + "' has " + std::to_string(bits) +
                    "-bit samples: only 8-bit images are supported; convert it to 8 bits");
}

namespace {

// ---- PNG --------------------------------------------------------------------------------

struct PngInput {
    const std::uint8_t* data = nullptr;
    std::size_t size = 0;
    std::size_t position = 0;
    char error[256] = {};
};

void png_read_from_memory(png_structp png, png_bytep destination, png_size_t length) {
    auto* input = static_cast<PngInput*>(png_get_io_ptr(png));
    if (length > input->size - input->position) png_error(png, "the file ends early (truncated)");
    std::memcpy(destination, input->data + input->position, length);
    input->position += length;
}

void png_on_error(png_structp png, png_const_charp message) {
    auto* input = static_cast<PngInput*>(png_get_error_ptr(png));
    std::snprintf(input->error, sizeof input->error, "%s", message);
    png_longjmp(png, 1);
}

// libpng's warnings (a damaged ancillary chunk, an sRGB profile it dislikes) do not stop it
// or PIL, and must not reach the terminal.
void png_on_warning(png_structp, png_const_charp) {}

struct PngHandles {
    png_structp png = nullptr;
    png_infop info = nullptr;
    ~PngHandles() { png_destroy_read_struct(&png, info != nullptr ? &info : nullptr, nullptr); }
};

// ---- JPEG -------------------------------------------------------------------------------

struct JpegErrors {
    jpeg_error_mgr manager;  // first: libjpeg hands back a pointer to it
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    bool truncated;
};

void jpeg_on_error(j_common_ptr codec) {
    auto* errors = reinterpret_cast<JpegErrors*>(codec->err);
    (*codec->err->format_message)(codec, errors->message);
    std::longjmp(errors->jump, 1);
}

// Warnings are kept off stderr; the one that says the data ran out marks the image truncated.
void jpeg_on_message(j_common_ptr codec, int level) {
    if (level < 0 && codec->err->msg_code == JWRN_JPEG_EOF) reinterpret_cast<JpegErrors*>(codec->err)->truncated = true;
}

struct JpegHandle {
    jpeg_decompress_struct codec{};  // zeroed: destroying it before jpeg_create_decompress is a no-op
    ~JpegHandle() { jpeg_destroy_decompress(&codec); }
};

// Pillow's MULDIV255: a * b / 255, rounded, in integers.
inline int multiply_divide_255(int a, int b) {
    const int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

// One CMYK row as libjpeg gives it (Adobe polarity: 255 is no ink) to RGB, as PIL's
// "CMYK;I" unpacking followed by convert("RGB") does.
void cmyk_row_to_rgb(const std::uint8_t* cmyk, std::uint8_t* rgb, std::size_t width) {
    for (std::size_t x = 0; x < width; ++x, cmyk += 4, rgb += 3) {
        const int not_black = cmyk[3];  // 255 - K
        for (int c = 0; c < 3; ++c) {
            const int value = not_black - multiply_divide_255(255 - cmyk[c], not_black);
            rgb[c] = static_cast<std::uint8_t>(value < 0 ? 0 : value);
        }
    }
}

// Palette indices to RGB through PIL's palette: its gray ramp, overwritten by the PLTE entries.
// The `count` indices are the last third of `pixels`; writing pixel i's three bytes never
// reaches an index not yet read (3i + 2 < 2 * count + i + 1 for every i < count).
void expand_palette_in_place(const PngHandles& handles, std::uint8_t* pixels, std::size_t count) {
    std::array<std::uint8_t, 256 * 3> table{};
    for (int i = 0; i < 256; ++i) table[3 * i] = table[3 * i + 1] = table[3 * i + 2] = static_cast<std::uint8_t>(i);
    png_colorp entries = nullptr;
    int entry_count = 0;
    if (png_get_PLTE(handles.png, handles.info, &entries, &entry_count) != 0) {
        for (int i = 0; i < entry_count && i < 256; ++i) {
            table[3 * i] = entries[i].red;
            table[3 * i + 1] = entries[i].green;
            table[3 * i + 2] = entries[i].blue;
        }
    }
    const std::uint8_t* index = pixels + 2 * count;
    for (std::size_t i = 0; i < count; ++i, pixels += 3) {
        const std::uint8_t* colour = &table[3 * static_cast<std::size_t>(*index++)];
        pixels[0] = colour[0];
        pixels[1] = colour[1];
        pixels[2] = colour[2];
    }
}

}  // namespace

std::string decode_png(const std::string& path, const std::vector<std::uint8_t>& bytes, DecodedImage& out) {
    PngInput input;
    input.data = bytes.data();
    input.size = bytes.size();
    PngHandles handles;
    handles.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &input, png_on_error, png_on_warning);
    if (handles.png == nullptr) throw std::bad_alloc();
    handles.info = png_create_info_struct(handles.png);
    if (handles.info == nullptr) throw std::bad_alloc();
    if (setjmp(png_jmpbuf(handles.png))) return std::string("not a readable PNG (") + input.error + ")";

    png_set_read_fn(handles.png, &input, png_read_from_memory);
    // PIL's own limit applies (check_image_size), not libpng's default of 1,000,000 columns.
    png_set_user_limits(handles.png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
    png_read_info(handles.png, handles.info);
    png_uint_32 width = 0, height = 0;
    int bit_depth = 0, color_type = 0;
    png_get_IHDR(handles.png, handles.info, &width, &height, &bit_depth, &color_type, nullptr, nullptr, nullptr);
    if (bit_depth > 8) refuse_sample_depth(path, bit_depth);
    if (auto too_big = check_image_size(width, height); !too_big.empty()) return too_big;

    // PIL's convert("RGB") / convert("L"): palette colours (transparency ignored), 1/2/4-bit
    // gray scaled (x255, x85, x17), alpha dropped; gamma chunks are not applied. Palette images
    // are read as one index byte per pixel and looked up here, not by libpng: libpng maps an
    // index past the PLTE entries to black, PIL to its default gray ramp (i, i, i).
    const bool palette = color_type == PNG_COLOR_TYPE_PALETTE;
    if (palette && bit_depth < 8) png_set_packing(handles.png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(handles.png);
    png_set_strip_alpha(handles.png);
    const int passes = png_set_interlace_handling(handles.png);
    png_read_update_info(handles.png, handles.info);
    const int channels = png_get_channels(handles.png, handles.info);
    if (channels != 1 && channels != 3) return "not a readable PNG (" + std::to_string(channels) + " channels after expansion)";

    out.width = static_cast<int>(width);
    out.height = static_cast<int>(height);
    out.channels = palette ? 3 : channels;
    const std::size_t stride = static_cast<std::size_t>(width) * channels;
    const std::size_t pixel_count = static_cast<std::size_t>(width) * height;
    out.pixels.resize(pixel_count * out.channels);
    // A palette image's indices go into the last third of `out`, to be expanded in place.
    std::uint8_t* const rows = out.pixels.data() + (palette ? 2 * pixel_count : 0);
    // Row by row, each pass of an interlaced image over the same rows (libpng merges them).
    for (int pass = 0; pass < passes; ++pass) {
        for (png_uint_32 y = 0; y < height; ++y) png_read_row(handles.png, rows + y * stride, nullptr);
    }
    // What follows the image data (text chunks, IEND) is not read: PIL does not need it either.
    if (palette) expand_palette_in_place(handles, out.pixels.data(), pixel_count);
    return "";
}

std::string decode_jpeg(const std::string& path, const std::vector<std::uint8_t>& bytes, DecodedImage& out) {
    JpegErrors errors{};
    JpegHandle handle;
    jpeg_decompress_struct& codec = handle.codec;
    codec.err = jpeg_std_error(&errors.manager);
    errors.manager.error_exit = jpeg_on_error;
    errors.manager.emit_message = jpeg_on_message;
    if (setjmp(errors.jump)) return std::string("not a readable JPEG (") + errors.message + ")";

    jpeg_create_decompress(&codec);
    jpeg_mem_src(&codec, bytes.data(), static_cast<unsigned long>(bytes.size()));
    jpeg_read_header(&codec, TRUE);
    if (codec.data_precision != 8) refuse_sample_depth(path, codec.data_precision);
    if (auto too_big = check_image_size(codec.image_width, codec.image_height); !too_big.empty()) return too_big;
    // PIL decides by the number of components: 1 gray, 3 RGB (YCbCr or Adobe RGB), 4 CMYK.
    const bool cmyk = codec.num_components == 4;
    switch (codec.num_components) {
        case 1: codec.out_color_space = JCS_GRAYSCALE; break;
        case 3: codec.out_color_space = JCS_RGB; break;
        case 4: codec.out_color_space = JCS_CMYK; break;
        default: return "not a readable JPEG (" + std::to_string(codec.num_components) + " components)";
    }
    jpeg_start_decompress(&codec);

    out.width = static_cast<int>(codec.output_width);
    out.height = static_cast<int>(codec.output_height);
    out.channels = cmyk ? 3 : codec.output_components;
    const std::size_t stride = static_cast<std::size_t>(out.width) * out.channels;
    const std::size_t image_bytes = stride * out.height;
    // A CMYK row is read into scratch space past the image, then converted into place.
    out.pixels.resize(image_bytes + (cmyk ? static_cast<std::size_t>(out.width) * 4 : 0));
    while (codec.output_scanline < codec.output_height) {
        std::uint8_t* destination = out.pixels.data() + codec.output_scanline * stride;
        JSAMPROW row = cmyk ? out.pixels.data() + image_bytes : destination;
        jpeg_read_scanlines(&codec, &row, 1);
        if (cmyk) cmyk_row_to_rgb(out.pixels.data() + image_bytes, destination, static_cast<std::size_t>(out.width));
    }
    jpeg_finish_decompress(&codec);
    out.pixels.resize(image_bytes);
    if (errors.truncated) return "truncated JPEG (the file ends before its image data does)";
    return "";
}

}  // namespace fstore::detail
