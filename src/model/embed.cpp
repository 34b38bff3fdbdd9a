// fstore embed's logic and the config -> tokenizer / preprocessor glue. No LibTorch here:
// the model is reached through ClipModel's plain-buffer interface.
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "fstore/error.hpp"
#include "fstore/model.hpp"
#include "fstore/preprocess.hpp"
#include "fstore/tokenizer.hpp"

namespace fstore {

std::unique_ptr<Tokenizer> make_model_tokenizer(const ModelConfig& config) {
    const auto tokenizer = nlohmann::json::parse(config.tokenizer_json);
    return make_tokenizer(tokenizer_config_from_json(tokenizer, config.context_length), config.tokenizer_bytes);
}

PreprocessConfig model_preprocess_config(const ModelConfig& config) {
    PreprocessConfig p;
    p.image_size = static_cast<int>(config.image_size);
    p.mean = config.image_mean;
    p.std = config.image_std;
    p.resample = config.resample;
    return p;
}

RgbImage read_rgb_image(const std::string& path) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
        throw NotFoundError("image '" + path + "' not found: check the path");
    }
    // UNCHANGED keeps the depth visible so 16-bit files are refused instead of silently scaled.
    cv::Mat image;
    try {
        image = cv::imread(path, cv::IMREAD_UNCHANGED);
    } catch (const cv::Exception&) {
        image.release();
    }
    if (image.empty()) {
        throw DataError("cannot decode image '" + path + "': use an 8-bit PNG, JPEG, BMP or TIFF file");
    }
    if (image.depth() != CV_8U) {
        throw DataError("image '" + path + "' is not 8-bit per channel: convert it to 8-bit RGB or gray");
    }
    cv::Mat rgb;
    switch (image.channels()) {
        case 1: cv::cvtColor(image, rgb, cv::COLOR_GRAY2RGB); break;
        case 3: cv::cvtColor(image, rgb, cv::COLOR_BGR2RGB); break;
        case 4: cv::cvtColor(image, rgb, cv::COLOR_BGRA2RGB); break;
        default:
            throw DataError("image '" + path + "' has " + std::to_string(image.channels()) +
                            " channels: use gray, RGB or RGBA");
    }
    RgbImage out;
    out.height = rgb.rows;
    out.width = rgb.cols;
    out.pixels.resize(static_cast<std::size_t>(rgb.rows) * rgb.cols * 3);
    for (int y = 0; y < rgb.rows; ++y) {
        std::memcpy(out.pixels.data() + static_cast<std::size_t>(y) * rgb.cols * 3, rgb.ptr(y),
                    static_cast<std::size_t>(rgb.cols) * 3);
    }
    return out;
}

EmbedResult embed(ClipModel& model, const EmbedRequest& request) {
    EmbedResult result;
    if (!request.texts.empty()) {
        const auto tokenizer = make_model_tokenizer(model.config());
        const TokenBatch ids = tokenizer->encode_batch(request.texts);
        result.text_batch = ids.batch;
        result.text_length = ids.length;
        result.input_ids = ids.input_ids;
        result.text = model.encode_texts(ids.input_ids.data(), ids.batch, ids.length, request.type);
    }
    if (!request.image_paths.empty()) {
        Preprocessor preprocess(model_preprocess_config(model.config()));
        const std::size_t per_image = preprocess.output_size();
        std::vector<float> pixels(per_image * request.image_paths.size());
        for (std::size_t i = 0; i < request.image_paths.size(); ++i) {
            const RgbImage image = read_rgb_image(request.image_paths[i]);
            preprocess.run(ImageView{image.pixels.data(), image.height, image.width, 3}, pixels.data() + i * per_image);
        }
        result.image = model.encode_images(pixels.data(), static_cast<std::int64_t>(request.image_paths.size()),
                                           request.type);
    }
    return result;
}

}  // namespace fstore
