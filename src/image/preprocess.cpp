// PIL-exact resampling (a port of Pillow's libImaging/Resample.c, 8 bits per channel)
// and the HF processor's normalization.
#include "fstore/preprocess.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <map>
#include <utility>

#include "fstore/error.hpp"

namespace fstore {
namespace {

// Pillow's filters (Resample.c), with their support radius.
double bicubic_filter(double x) {
    constexpr double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

// 8 bits of result, 2 bits of headroom for negative lobes / sums above 1.
constexpr int precision_bits = 32 - 8 - 2;

inline std::uint8_t clip8(std::int32_t v) {
    v >>= precision_bits;  // arithmetic shift, as Pillow's lookup table index
    return static_cast<std::uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// One axis: for each output index, the first input index, the tap count and ksize
// fixed-point weights (precompute_coeffs + normalize_coeffs_8bpc).
struct AxisCoeffs {
    int ksize = 0;
    std::vector<int> first;
    std::vector<int> count;
    std::vector<std::int32_t> weights;  // out_size * ksize
};

AxisCoeffs precompute_coeffs(int in_size, int out_size, Resample filter) {
    double (*fn)(double) = filter == Resample::bicubic ? bicubic_filter : bilinear_filter;
    const double filter_support = filter == Resample::bicubic ? 2.0 : 1.0;

    // Pillow computes (in1 - in0) in float with box = (0, 0, in_w, in_h): exact here.
    const double scale = static_cast<double>(static_cast<float>(in_size)) / out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = filter_support * filterscale;

    AxisCoeffs c;
    c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
    c.first.resize(out_size);
    c.count.resize(out_size);
    c.weights.assign(static_cast<std::size_t>(out_size) * c.ksize, 0);
    std::vector<double> k(c.ksize);
    for (int xx = 0; xx < out_size; ++xx) {
        const double center = (xx + 0.5) * scale;
        const double ss = 1.0 / filterscale;
        int xmin = static_cast<int>(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = static_cast<int>(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; ++x) {
            const double w = fn((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (int x = 0; x < xmax; ++x) {
            if (ww != 0.0) k[x] /= ww;
        }
        std::int32_t* out = &c.weights[static_cast<std::size_t>(xx) * c.ksize];
        for (int x = 0; x < xmax; ++x) {
            const double v = k[x] * (1 << precision_bits);
            out[x] = static_cast<std::int32_t>(k[x] < 0 ? -0.5 + v : 0.5 + v);
        }
        c.first[xx] = xmin;
        c.count[xx] = xmax;
    }
    return c;
}

template <int C>
void horizontal_pass(const std::uint8_t* in, int in_width, int row_begin, int row_end,
                     const AxisCoeffs& c, int out_width, std::uint8_t* out) {
    const std::size_t in_stride = static_cast<std::size_t>(in_width) * C;
    const std::size_t out_stride = static_cast<std::size_t>(out_width) * C;
    for (int y = row_begin; y < row_end; ++y) {
        const std::uint8_t* src = in + static_cast<std::size_t>(y) * in_stride;
        std::uint8_t* dst = out + static_cast<std::size_t>(y - row_begin) * out_stride;
        for (int xx = 0; xx < out_width; ++xx) {
            const std::uint8_t* s = src + static_cast<std::size_t>(c.first[xx]) * C;
            const std::int32_t* k = &c.weights[static_cast<std::size_t>(xx) * c.ksize];
            const int n = c.count[xx];
            std::int32_t acc[C];
            for (int ch = 0; ch < C; ++ch) acc[ch] = 1 << (precision_bits - 1);
            for (int x = 0; x < n; ++x) {
                for (int ch = 0; ch < C; ++ch) acc[ch] += s[x * C + ch] * k[x];
            }
            for (int ch = 0; ch < C; ++ch) dst[xx * C + ch] = clip8(acc[ch]);
        }
    }
}

// Rows are accumulated whole (same integer sums as Pillow's per-pixel loop, in an order
// the compiler vectorizes).
void vertical_pass(const std::uint8_t* in, std::size_t row_len, const AxisCoeffs& c,
                   int out_height, std::uint8_t* out, std::int32_t* acc) {
    for (int yy = 0; yy < out_height; ++yy) {
        const std::int32_t* k = &c.weights[static_cast<std::size_t>(yy) * c.ksize];
        const int first = c.first[yy];
        const int n = c.count[yy];
        for (std::size_t i = 0; i < row_len; ++i) acc[i] = 1 << (precision_bits - 1);
        for (int y = 0; y < n; ++y) {
            const std::uint8_t* row = in + static_cast<std::size_t>(first + y) * row_len;
            const std::int32_t w = k[y];
            for (std::size_t i = 0; i < row_len; ++i) acc[i] += row[i] * w;
        }
        std::uint8_t* dst = out + static_cast<std::size_t>(yy) * row_len;
        for (std::size_t i = 0; i < row_len; ++i) dst[i] = clip8(acc[i]);
    }
}

std::string lower(std::string s) {
    for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return s;
}

}  // namespace

Resample parse_resample(const std::string& name) {
    const std::string n = lower(name);
    if (n == "bicubic") return Resample::bicubic;
    if (n == "bilinear") return Resample::bilinear;
    throw ModelError("unsupported resample filter '" + name +
                     "' in the model config: use \"bicubic\" or \"bilinear\"");
}

const char* resample_name(Resample filter) {
    return filter == Resample::bicubic ? "bicubic" : "bilinear";
}

struct Resizer::Impl {
    int in_w, in_h, out_w, out_h;
    bool need_horizontal, need_vertical;
    AxisCoeffs horiz, vert;
    int row_begin = 0, row_end = 0;  // input rows the vertical pass reads
};

Resizer::Resizer(int in_width, int in_height, int out_width, int out_height, Resample filter)
    : impl_(std::make_unique<Impl>()) {
    if (in_width <= 0 || in_height <= 0 || out_width <= 0 || out_height <= 0) {
        throw UsageError("cannot resize " + std::to_string(in_width) + "x" +
                         std::to_string(in_height) + " to " + std::to_string(out_width) + "x" +
                         std::to_string(out_height) + ": sizes must be positive");
    }
    Impl& m = *impl_;
    m.in_w = in_width;
    m.in_h = in_height;
    m.out_w = out_width;
    m.out_h = out_height;
    // Pillow skips a pass whose dimension is unchanged (ImagingResampleInner).
    m.need_horizontal = out_width != in_width;
    m.need_vertical = out_height != in_height;
    m.vert = precompute_coeffs(in_height, out_height, filter);
    m.row_begin = m.vert.first.front();
    m.row_end = m.vert.first.back() + m.vert.count.back();
    if (m.need_horizontal) {
        m.horiz = precompute_coeffs(in_width, out_width, filter);
        if (m.need_vertical) {
            // The intermediate holds only rows row_begin..row_end: shift the bounds.
            for (auto& f : m.vert.first) f -= m.row_begin;
        } else {
            m.row_begin = 0;
            m.row_end = in_height;
        }
    }
}

Resizer::~Resizer() = default;
Resizer::Resizer(Resizer&&) noexcept = default;
Resizer& Resizer::operator=(Resizer&&) noexcept = default;

int Resizer::in_width() const noexcept { return impl_->in_w; }
int Resizer::in_height() const noexcept { return impl_->in_h; }
int Resizer::out_width() const noexcept { return impl_->out_w; }
int Resizer::out_height() const noexcept { return impl_->out_h; }

void Resizer::resize(const std::uint8_t* in, int channels, std::uint8_t* out,
                     std::vector<std::uint8_t>& scratch) const {
    const Impl& m = *impl_;
    if (channels < 1 || channels > 4) {
        throw DataError("cannot resize an image with " + std::to_string(channels) +
                        " channels: use 1 (gray), 2, 3 (RGB) or 4 (RGBA)");
    }
    if (!m.need_horizontal && !m.need_vertical) {
        std::memcpy(out, in, static_cast<std::size_t>(m.in_w) * m.in_h * channels);
        return;
    }
    const std::size_t out_row = static_cast<std::size_t>(m.out_w) * channels;
    const std::uint8_t* src = in;
    if (m.need_horizontal && m.need_vertical) {
        const std::size_t tmp_bytes = out_row * (m.row_end - m.row_begin);
        if (scratch.size() < tmp_bytes) scratch.resize(tmp_bytes);
    }
    std::uint8_t* tmp = scratch.data();

    if (m.need_horizontal) {
        std::uint8_t* dst = m.need_vertical ? tmp : out;
        switch (channels) {
            case 1: horizontal_pass<1>(in, m.in_w, m.row_begin, m.row_end, m.horiz, m.out_w, dst); break;
            case 2: horizontal_pass<2>(in, m.in_w, m.row_begin, m.row_end, m.horiz, m.out_w, dst); break;
            case 3: horizontal_pass<3>(in, m.in_w, m.row_begin, m.row_end, m.horiz, m.out_w, dst); break;
            default: horizontal_pass<4>(in, m.in_w, m.row_begin, m.row_end, m.horiz, m.out_w, dst); break;
        }
        if (!m.need_vertical) return;
        src = tmp;
    }
    std::vector<std::int32_t> acc(out_row);
    vertical_pass(src, out_row, m.vert, m.out_h, out, acc.data());
}

std::vector<std::uint8_t> resize_image(const ImageView& image, int out_width, int out_height,
                                       Resample filter) {
    if (image.data == nullptr || image.width <= 0 || image.height <= 0) {
        throw DataError("cannot resize an empty image");
    }
    Resizer resizer(image.width, image.height, out_width, out_height, filter);
    std::vector<std::uint8_t> out(static_cast<std::size_t>(out_width) * out_height * image.channels);
    std::vector<std::uint8_t> scratch;
    resizer.resize(image.data, image.channels, out.data(), scratch);
    return out;
}

struct Preprocessor::Impl {
    PreprocessConfig config;
    Resample filter = Resample::bicubic;
    std::array<std::array<float, 256>, 3> lut{};
    // Datasets are mostly one size; folders may mix a few. Bounded so odd folders
    // cannot grow it without limit.
    std::map<std::pair<int, int>, Resizer> resizers;
    std::vector<std::uint8_t> packed, resized, scratch;

    const Resizer& resizer_for(int w, int h) {
        auto key = std::make_pair(w, h);
        auto it = resizers.find(key);
        if (it != resizers.end()) return it->second;
        if (resizers.size() >= 32) resizers.clear();
        return resizers
            .emplace(key, Resizer(w, h, config.image_size, config.image_size, filter))
            .first->second;
    }

    // Resizes to image_size^2 with 1 (gray) or 3 (RGB) channels; returns the channel count.
    int resize(const ImageView& image) {
        if (image.data == nullptr || image.width <= 0 || image.height <= 0) {
            throw DataError("cannot preprocess an empty image");
        }
        const int c = image.channels;
        if (c < 1 || c > 4) {
            throw DataError("cannot preprocess an image with " + std::to_string(c) +
                            " channels: use 1 (gray), 3 (RGB) or 4 (RGBA)");
        }
        const std::size_t pixels = static_cast<std::size_t>(image.width) * image.height;
        const std::uint8_t* src = image.data;
        int kept = c;
        if (c == 2 || c == 4) {
            // Drop alpha like PIL's convert("RGB"/"L"): no compositing.
            kept = c - 1;
            packed.resize(pixels * kept);
            for (std::size_t i = 0; i < pixels; ++i) {
                for (int ch = 0; ch < kept; ++ch) packed[i * kept + ch] = src[i * c + ch];
            }
            src = packed.data();
        }
        const int s = config.image_size;
        resized.resize(static_cast<std::size_t>(s) * s * kept);
        // Gray resized then replicated equals RGB-converted then resized: 3x less work.
        resizer_for(image.width, image.height).resize(src, kept, resized.data(), scratch);
        return kept;
    }
};

Preprocessor::Preprocessor(PreprocessConfig config) : impl_(std::make_unique<Impl>()) {
    if (config.image_size <= 0) {
        throw UsageError("image_size must be positive, got " + std::to_string(config.image_size));
    }
    for (int c = 0; c < 3; ++c) {
        if (!(config.std[c] != 0.0F) || !std::isfinite(config.std[c]) ||
            !std::isfinite(config.mean[c])) {
            throw UsageError("image_std must be finite and non-zero and image_mean finite");
        }
    }
    impl_->filter = parse_resample(config.resample);
    // Same arithmetic as the HF processor: float64 x * (1/255) rounded to float32, then
    // float32 (x - mean) / std.
    for (int c = 0; c < 3; ++c) {
        for (int v = 0; v < 256; ++v) {
            const auto scaled = static_cast<float>(static_cast<double>(v) * (1.0 / 255.0));
            impl_->lut[c][v] = (scaled - config.mean[c]) / config.std[c];
        }
    }
    impl_->config = std::move(config);
}

Preprocessor::~Preprocessor() = default;
Preprocessor::Preprocessor(Preprocessor&&) noexcept = default;
Preprocessor& Preprocessor::operator=(Preprocessor&&) noexcept = default;

const PreprocessConfig& Preprocessor::config() const noexcept { return impl_->config; }

std::size_t Preprocessor::output_size() const noexcept {
    const auto s = static_cast<std::size_t>(impl_->config.image_size);
    return 3 * s * s;
}

void Preprocessor::run(const ImageView& image, float* out) {
    Impl& m = *impl_;
    const int kept = m.resize(image);
    const std::size_t plane = static_cast<std::size_t>(m.config.image_size) * m.config.image_size;
    const std::uint8_t* px = m.resized.data();
    for (int c = 0; c < 3; ++c) {
        const float* lut = m.lut[c].data();
        float* dst = out + c * plane;
        const int src_c = kept == 1 ? 0 : c;
        for (std::size_t i = 0; i < plane; ++i) dst[i] = lut[px[i * kept + src_c]];
    }
}

std::vector<std::uint8_t> Preprocessor::resize_rgb(const ImageView& image) {
    Impl& m = *impl_;
    const int kept = m.resize(image);
    if (kept == 3) return m.resized;
    std::vector<std::uint8_t> rgb(m.resized.size() * 3);
    for (std::size_t i = 0; i < m.resized.size(); ++i) {
        rgb[i * 3] = rgb[i * 3 + 1] = rgb[i * 3 + 2] = m.resized[i];
    }
    return rgb;
}

}  // namespace fstore
