// fstore embed's logic and the config -> tokenizer / preprocessor glue. No LibTorch here:
// the model is reached through ClipModel's plain-buffer interface.
#include <filesystem>

#include <nlohmann/json.hpp>

#include "fstore/error.hpp"
#include "fstore/image_file.hpp"
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
        if (!image_files_supported()) throw UsageError("cannot read --image files: " + image_files_unsupported_reason());
        Preprocessor preprocess(model_preprocess_config(model.config()));
        const std::size_t per_image = preprocess.output_size();
        std::vector<float> pixels(per_image * request.image_paths.size());
        DecodedImage image;
        for (std::size_t i = 0; i < request.image_paths.size(); ++i) {
            const std::string& path = request.image_paths[i];
            std::error_code ec;
            if (!std::filesystem::exists(path, ec)) throw NotFoundError("image '" + path + "' not found: check the path");
            if (std::filesystem::is_directory(path, ec)) {
                throw UsageError("--image '" + path + "' is a directory: pass image files (a folder of images is "
                                 "fstore build --images DIR --labels CSV)");
            }
            if (const std::string reason = decode_image_file(path, image); !reason.empty()) {
                throw DataError("cannot decode image '" + path + "' (" + reason +
                                "): use an 8-bit PNG, JPEG, BMP or TIFF file");
            }
            preprocess.run(ImageView{image.pixels.data(), image.height, image.width, image.channels},
                           pixels.data() + i * per_image);
        }
        result.image = model.encode_images(pixels.data(), static_cast<std::int64_t>(request.image_paths.size()),
                                           request.type);
    }
    return result;
}

}  // namespace fstore
