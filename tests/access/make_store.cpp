// Writes a small store through fstore's own FeatureStore, for the fstore-access CLI tests
// (the counterpart of the h5py reference writer, tests/python/fstore_ref/store.py).
//
//   fstore_access_make_store OUT.h5 [--train N] [--val N] [--test N] [--dim D] [--tokens T]
//                            [--text-tokens T] [--seed S] [--hold SECONDS]
//
// --hold keeps the store open for writing afterwards (prints "ready" first), so tests can
// check how readers behave while a writer holds the lock.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "fstore/feature_store.hpp"
#include "fstore/half.hpp"

namespace {

const std::vector<std::string> kLabels = {"basophil", "eosinophil", "erythroblast", "immature granulocytes",
                                          "lymphocyte", "monocyte", "neutrophil", "platelet"};
const std::vector<std::string> kConcepts = {"Segmented nucleus", "Round nucleus", "Pale cytoplasm",
                                            "Basophilic granules", "Cytoplasmic vacuoles"};

std::string expand(const std::string& templ, const std::string& value) {
    const auto at = templ.find("{}");
    return templ.substr(0, at) + value + templ.substr(at + 2);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::cerr << "usage: fstore_access_make_store OUT.h5 [--train N] [--val N] [--test N] [--dim D] "
                     "[--tokens T] [--text-tokens T] [--seed S] [--hold SECONDS]\n";
        return 2;
    }
    std::int64_t train = 5, val = 3, test = 2, dim = 8, tokens = 4, text_tokens = 6, seed = 1, hold = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        const std::string key = argv[i];
        const std::int64_t value = std::atoll(argv[i + 1]);
        if (key == "--train") train = value;
        else if (key == "--val") val = value;
        else if (key == "--test") test = value;
        else if (key == "--dim") dim = value;
        else if (key == "--tokens") tokens = value;
        else if (key == "--text-tokens") text_tokens = value;
        else if (key == "--seed") seed = value;
        else if (key == "--hold") hold = value;
        else {
            std::cerr << "unknown option " << key << "\n";
            return 2;
        }
    }
    try {
        std::mt19937_64 rng(static_cast<std::uint64_t>(seed));
        std::normal_distribution<float> normal;
        auto store = fstore::FeatureStore::open_or_create(argv[1], fstore::StoreLayout{dim, tokens});

        const std::vector<std::pair<std::string, std::vector<std::string>>> templates = {
            {"concept_prompts_t01", kConcepts}, {"concept_prompts_t02", kConcepts}, {"label_prompts_t01", kLabels}};
        const std::vector<std::string> patterns = {"a cell photo with sign of {}", "a photo of a cell with {}",
                                                   "a microscopic image of a {} cell"};
        for (std::size_t t = 0; t < templates.size(); ++t) {
            fstore::TemplateRecord record;
            for (const auto& value : templates[t].second) record.texts.push_back(expand(patterns[t], value));
            const auto k = static_cast<std::int64_t>(record.texts.size());
            record.text_features.resize(static_cast<std::size_t>(k * dim));
            for (auto& v : record.text_features) v = normal(rng);
            // The last template has no token features, like a text stage run without them.
            if (text_tokens > 0 && t + 1 < templates.size()) {
                record.text_tokens = text_tokens;
                record.text_token_features.resize(static_cast<std::size_t>(k * text_tokens * dim));
                for (auto& v : record.text_token_features) v = normal(rng);
            }
            store.write_template(templates[t].first, record);
        }
        store.set_json_attribute("label_texts", kLabels);
        store.set_json_attribute("concept_texts", kConcepts);
        store.set_json_attribute("dataset", "bloodmnist");
        store.set_attribute("logit_scale", 4.6);
        store.set_attribute("logit_bias", -10.0);

        const std::int64_t batch = 3;
        for (const auto& [split, count] : std::vector<std::pair<std::string, std::int64_t>>{
                 {"train", train}, {"val", val}, {"test", test}}) {
            for (std::int64_t start = 0; start < count; start += batch) {
                const std::int64_t rows = std::min(batch, count - start);
                std::vector<std::uint16_t> cls(static_cast<std::size_t>(rows * dim));
                std::vector<std::uint16_t> toks(static_cast<std::size_t>(rows * tokens * dim));
                for (auto& h : cls) h = fstore::float_to_half(normal(rng));
                for (auto& h : toks) h = fstore::float_to_half(normal(rng));
                std::vector<std::int64_t> labels(static_cast<std::size_t>(rows));
                for (auto& l : labels) l = static_cast<std::int64_t>(rng() % kLabels.size());
                const std::vector<std::string> splits(static_cast<std::size_t>(rows), split);
                fstore::RowBatch b;
                b.rows = rows;
                b.image_features = cls.data();
                b.image_token_features = toks.data();
                b.labels = labels.data();
                b.splits = &splits;
                store.append_batch(b);
            }
        }
        store.commit();
        if (hold > 0) {
            std::cout << "ready" << std::endl;
            std::this_thread::sleep_for(std::chrono::seconds(hold));
        }
    } catch (const std::exception& e) {
        std::cerr << "fstore_access_make_store: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
