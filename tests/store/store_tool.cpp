// Test helper for the Python interop tests (test_interop.py):
//   fstore_store_tool write <store.h5> <rawdir>  writes a small store (D=8, T_img=5) through
//       FeatureStore and the inputs it was given as raw files in <rawdir>;
//   fstore_store_tool dump <store.h5> <outdir>   reads any store through FeatureStore and
//       writes every column, template and attribute to <outdir> as raw files / JSON.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include "fstore/error.hpp"
#include "fstore/feature_store.hpp"
#include "fstore/half.hpp"

namespace fs = std::filesystem;
using fstore::Column;
using fstore::FeatureStore;

namespace {

template <class T>
void write_raw(const fs::path& path, const T* data, std::size_t count) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(T)));
}
void write_raw(const fs::path& path, const fstore::Array& a) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(a.bytes.data()), static_cast<std::streamsize>(a.bytes.size()));
}
void write_json(const fs::path& path, const nlohmann::json& j) { std::ofstream(path) << j.dump(); }

int write_store(const fs::path& store_path, const fs::path& raw) {
    constexpr std::int64_t D = 8, T = 5, N = 70;
    fs::create_directories(raw);
    std::mt19937 rng(1234);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<std::uint16_t> cls(N * D), tokens(N * T * D);
    // CLS rows are smooth (chunks compress); token rows alternate between a compressible
    // chunk (4 rows of a constant pattern) and an incompressible one (random normals).
    for (std::int64_t i = 0; i < N; ++i)
        for (std::int64_t d = 0; d < D; ++d)
            cls[i * D + d] = fstore::float_to_half(static_cast<float>(i % 5) * 0.5f + static_cast<float>(d % 2));
    for (std::int64_t i = 0; i < N; ++i)
        for (std::int64_t k = 0; k < T * D; ++k)
            tokens[i * T * D + k] = fstore::float_to_half((i / 4) % 2 == 0 ? static_cast<float>(k % 3)
                                                                          : normal(rng));
    std::vector<std::int64_t> labels(N);
    std::vector<std::string> splits(N);
    for (std::int64_t i = 0; i < N; ++i) {
        labels[i] = i % 8 == 7 ? -1 : i % 8;
        splits[i] = i < 50 ? "train" : i < 60 ? "val" : "test";
    }

    auto store = FeatureStore::open_or_create(store_path, {D, T});
    // Three appends of uneven sizes: partial chunks get rewritten by later appends.
    for (auto [start, count] : {std::pair<std::int64_t, std::int64_t>{0, 50}, {50, 13}, {63, 7}}) {
        std::vector<std::string> part(splits.begin() + start, splits.begin() + start + count);
        fstore::RowBatch batch;
        batch.rows = count;
        batch.image_features = cls.data() + start * D;
        batch.image_token_features = tokens.data() + start * T * D;
        batch.labels = labels.data() + start;
        batch.splits = &part;
        store.append_batch(batch);
    }
    fstore::TemplateRecord with_tokens;
    with_tokens.texts = {"a cell photo with sign of Round nucleus", "a photo of a cell with Pale cytoplasm",
                         "caf\xc3\xa9 \xe2\x9c\x93"};
    with_tokens.text_features.resize(3 * D);
    for (auto& v : with_tokens.text_features) v = normal(rng);
    with_tokens.text_tokens = 4;
    with_tokens.text_token_features.resize(3 * 4 * D);
    for (auto& v : with_tokens.text_token_features) v = normal(rng);
    store.write_template("concept_prompts_t01", with_tokens);
    fstore::TemplateRecord plain;
    plain.texts = {"a bloodcell of basophil", "a bloodcell of platelet"};
    plain.text_features.resize(2 * D);
    std::iota(plain.text_features.begin(), plain.text_features.end(), -1.5f);
    store.write_template("label_prompts_t03", plain);
    store.set_attribute("logit_scale", 4.605170249938965);
    store.set_json_attribute("dataset", "bloodmnist");
    store.set_json_attribute("label_texts", nlohmann::json::array({"basophil", "eosinophil"}));

    write_raw(raw / "image_features.bin", cls.data(), cls.size());
    write_raw(raw / "image_token_features.bin", tokens.data(), tokens.size());
    write_raw(raw / "labels.bin", labels.data(), labels.size());
    write_json(raw / "splits.json", splits);
    write_raw(raw / "concept_prompts_t01.features.bin", with_tokens.text_features.data(), with_tokens.text_features.size());
    write_raw(raw / "concept_prompts_t01.tokens.bin", with_tokens.text_token_features.data(),
              with_tokens.text_token_features.size());
    write_json(raw / "concept_prompts_t01.texts.json", with_tokens.texts);
    write_raw(raw / "label_prompts_t03.features.bin", plain.text_features.data(), plain.text_features.size());
    write_json(raw / "label_prompts_t03.texts.json", plain.texts);
    return 0;
}

int dump_store(const fs::path& store_path, const fs::path& out) {
    fs::create_directories(out);
    auto store = FeatureStore::open(store_path);
    std::vector<std::int64_t> all(static_cast<std::size_t>(store.rows()));
    std::iota(all.begin(), all.end(), 0);
    write_raw(out / "image_features.bin", store.read_rows(Column::image_features, all));
    write_raw(out / "image_token_features.bin", store.read_rows(Column::image_token_features, all));
    write_raw(out / "ids.bin", store.read_rows(Column::ids, all));
    write_raw(out / "labels.bin", store.read_rows(Column::labels, all));
    write_json(out / "splits.json", store.read_all_splits());
    // A scattered, repeated, unsorted selection, for the reader's index path.
    const std::vector<std::int64_t> picks{store.rows() - 1, 0, 5, 5, 2, store.rows() / 2};
    write_raw(out / "picks_tokens.bin", store.read_rows(Column::image_token_features, picks));
    write_json(out / "picks.json", picks);
    nlohmann::json meta;
    meta["rows"] = store.rows();
    meta["D"] = store.layout().dim;
    meta["T_img"] = store.layout().image_tokens;
    meta["split_counts"] = store.split_counts();
    meta["templates"] = store.template_ids();
    for (const auto& [name, value] : store.attributes())
        std::visit([&, n = name](const auto& v) { meta["attrs"][n] = v; }, value);
    for (const auto& id : store.template_ids()) {
        const auto info = store.template_info(id);
        meta["template_info"][id] = {{"K", info.rows}, {"D", info.dim}, {"T_txt", info.text_tokens},
                                     {"texts_hash", info.texts_hash}};
        write_raw(out / (id + ".features.bin"), store.read_template(id, false));
        if (info.has_token_features) write_raw(out / (id + ".tokens.bin"), store.read_template(id, true));
        write_json(out / (id + ".texts.json"), store.template_texts(id));
    }
    write_json(out / "meta.json", meta);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s write|dump <store.h5> <dir>\n", argv[0]);
        return 2;
    }
    try {
        const std::string command = argv[1];
        if (command == "write") return write_store(argv[2], argv[3]);
        if (command == "dump") return dump_store(argv[2], argv[3]);
        std::fprintf(stderr, "unknown command %s\n", argv[1]);
        return 2;
    } catch (const fstore::Error& e) {
        std::fprintf(stderr, "fstore_store_tool: %s\n", e.what());
        return static_cast<int>(e.exit_code());
    }
}
