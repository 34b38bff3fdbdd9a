// Image preprocessing: the model processor's resize + normalize, in C++.
//
// The reference pipeline hands uint8 RGB images to HF's SiglipImageProcessor, which
// resizes them with PIL (`Image.resize(size, Image.BICUBIC)`), divides by 255 and
// normalizes per channel. Features are only comparable with the reference store when
// the pixels fed to the model are the same, so `Resizer` is a port of Pillow's
// libImaging/Resample.c for 8-bit images and produces the same bytes as PIL:
// separable, horizontal pass first into a uint8 intermediate, a filter support scaled by
// the reduction factor (so shrinking antialiases), taps cut at the borders and
// renormalized, 22-bit fixed-point weights, and a pass skipped when its dimension does
// not change. OpenCV's INTER_CUBIC is a different filter and does not match.
//
// Throughput: coefficients depend only on the (input, output) sizes, so a `Resizer` is
// built once per size pair and reused; `Preprocessor` caches them. Neither holds global
// state. A `Preprocessor` is not thread-safe (it owns scratch buffers): use one per
// thread, each writing into its own slice of a shared batch buffer.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fstore {

// PIL resampling filters we reproduce. Names as in the model config's "resample".
enum class Resample { bilinear, bicubic };

// "bicubic" or "bilinear" (case-insensitive); anything else throws ModelError (the name
// comes from a model archive's config).
Resample parse_resample(const std::string& name);
const char* resample_name(Resample filter);

// What the model's processor does (model config keys image_size/image_mean/image_std/resample).
struct PreprocessConfig {
    int image_size = 384;
    std::array<float, 3> mean{0.5F, 0.5F, 0.5F};
    std::array<float, 3> std{0.5F, 0.5F, 0.5F};
    std::string resample = "bicubic";
};

// A borrowed, tightly packed uint8 HWC image: channels 1 (gray), 2 (gray + alpha),
// 3 (RGB) or 4 (RGBA). Alpha is dropped (as PIL's convert("RGB") does), gray is
// replicated into R, G and B.
struct ImageView {
    const std::uint8_t* data = nullptr;
    int height = 0;
    int width = 0;
    int channels = 0;
};

// PIL-exact resize of interleaved uint8 images from one fixed size to another. Every
// channel is resampled alike: the same bytes as PIL for "L" and "RGB" images (PIL's own
// RGBA resize premultiplies alpha; Preprocessor drops alpha before resizing).
// Immutable after construction, so one Resizer may be shared by threads.
class Resizer {
public:
    // Throws UsageError on non-positive sizes.
    Resizer(int in_width, int in_height, int out_width, int out_height,
            Resample filter = Resample::bicubic);
    ~Resizer();
    Resizer(Resizer&&) noexcept;
    Resizer& operator=(Resizer&&) noexcept;

    int in_width() const noexcept;
    int in_height() const noexcept;
    int out_width() const noexcept;
    int out_height() const noexcept;

    // Resizes `in` (in_height x in_width x channels, channels 1..4, packed) into `out`
    // (out_height x out_width x channels). `scratch` holds the horizontal pass's uint8
    // intermediate and is grown as needed: pass the same vector again to avoid allocations.
    void resize(const std::uint8_t* in, int channels, std::uint8_t* out,
                std::vector<std::uint8_t>& scratch) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Convenience: PIL `Image.resize((out_width, out_height), filter)` of a packed image,
// channels kept as they are.
std::vector<std::uint8_t> resize_image(const ImageView& image, int out_width, int out_height,
                                       Resample filter = Resample::bicubic);

// Turns uint8 images of any size into the model's float input.
class Preprocessor {
public:
    // Throws UsageError for image_size <= 0 or std == 0, ModelError for an unknown resample.
    explicit Preprocessor(PreprocessConfig config);
    ~Preprocessor();
    Preprocessor(Preprocessor&&) noexcept;
    Preprocessor& operator=(Preprocessor&&) noexcept;

    const PreprocessConfig& config() const noexcept;
    // Floats one image occupies in the output: 3 * image_size * image_size.
    std::size_t output_size() const noexcept;

    // Writes one image as CHW float32 (RGB planes of image_size x image_size) into
    // out[0 .. output_size()): resize as PIL would, then (x / 255 - mean[c]) / std[c],
    // computed in the same float precision as the HF processor.
    // Throws DataError for an empty image or an unsupported channel count.
    void run(const ImageView& image, float* out);

    // The resized uint8 RGB image (image_size x image_size x 3), before normalization.
    std::vector<std::uint8_t> resize_rgb(const ImageView& image);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace fstore
