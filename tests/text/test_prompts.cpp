#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "fstore/error.hpp"
#include "fstore/prompts.hpp"
#include "test_helpers.hpp"

namespace fstore {
namespace {

namespace fs = std::filesystem;

TEST(Prompts, BloodMnistDefaults) {
    const PromptSet p = bloodmnist_prompts();
    ASSERT_EQ(p.label_texts.size(), 8u);
    ASSERT_EQ(p.label_templates.size(), 3u);
    ASSERT_EQ(p.concept_texts.size(), 15u);
    ASSERT_EQ(p.concept_templates.size(), 9u);
    EXPECT_EQ(p.label_texts[3], "immature granulocytes");
    EXPECT_EQ(p.concept_texts[2], "Reniform / indented nucleus");
    EXPECT_EQ(p.concept_texts[14], "Overlapping cell clumps (artifact)");
    EXPECT_EQ(p.concept_templates[8], "an image of blood cell showing {}");
    EXPECT_EQ(p.label_templates[2], "a bloodcell of {}");
    EXPECT_NO_THROW(validate_prompt_set(p, "defaults"));
}

TEST(Prompts, ExpansionIdsAndTexts) {
    const auto all = expand_templates(bloodmnist_prompts());
    ASSERT_EQ(all.size(), 12u);
    EXPECT_EQ(all[0].id, "concept_prompts_t01");
    EXPECT_EQ(all[8].id, "concept_prompts_t09");
    EXPECT_EQ(all[9].id, "label_prompts_t01");
    EXPECT_EQ(all[11].id, "label_prompts_t03");
    ASSERT_EQ(all[0].texts.size(), 15u);
    EXPECT_EQ(all[0].texts[0], "a cell photo with sign of Segmented nucleus");
    EXPECT_EQ(all[4].texts[9], "blood cell with High nuclear-to-cytoplasmic ratio");
    ASSERT_EQ(all[9].texts.size(), 8u);
    EXPECT_EQ(all[9].texts[3], "a microscopic image of a immature granulocytes cell");
    EXPECT_EQ(all[10].template_text, "a peripheral blood smear image of a {}");
    EXPECT_EQ(concept_template_id(12), "concept_prompts_t12");
    EXPECT_EQ(label_template_id(100), "label_prompts_t100");
    for (const char* id : {"concept_prompts_t01", "label_prompts_t09", "label_prompts_t100"})
        EXPECT_TRUE(is_prompt_template_id(id)) << id;
    for (const char* id : {"concept_prompts_tumor", "label_prompts_test", "concept_prompts_t1", "concept_prompts_t",
                           "my_concept_prompts_t01", "concept_prompts_t01x", "label_prompts_t0a"})
        EXPECT_FALSE(is_prompt_template_id(id)) << id;
    EXPECT_EQ(fill_template("x {} y", "{}"), "x {} y");  // the text is inserted, not re-expanded
    // Read back from a store, a template without "{}" is its own text, as the reference wrote it.
    const PromptSet stored{{"x", "y"}, {"a photo"}, {"c"}, {"{} z"}};
    EXPECT_THROW(expand_templates(stored), UsageError);
    const auto back = expand_stored_templates(stored);
    ASSERT_EQ(back.size(), 2u);
    EXPECT_EQ(back[0].texts, (std::vector<std::string>{"c z"}));
    EXPECT_EQ(back[1].id, "label_prompts_t01");
    EXPECT_EQ(back[1].texts, (std::vector<std::string>{"a photo", "a photo"}));
}

TEST(Prompts, MatchesPythonReference) {
    const fs::path dir = test::make_temp_dir("prompts");
    const auto ref = test::run_reference_driver("prompts", dir);
    for (const char* name : {"bloodmnist", "odd"}) {
        const auto& r = ref[name];
        const PromptSet p = prompt_set_from_json(r["prompts"], name);
        if (std::string(name) == "bloodmnist") {
            EXPECT_EQ(p, bloodmnist_prompts());
        }
        for (const auto& [attr, value] : prompt_attributes(p)) {
            EXPECT_EQ(value, r["attributes"][attr].get<std::string>()) << name << " " << attr;
        }
        const auto expanded = expand_templates(p);
        ASSERT_EQ(expanded.size(), r["templates"].size());
        for (std::size_t i = 0; i < expanded.size(); ++i) {
            EXPECT_EQ(expanded[i].id, r["templates"][i]["id"].get<std::string>());
            EXPECT_EQ(expanded[i].texts, r["templates"][i]["texts"].get<std::vector<std::string>>());
        }
        const auto attrs = prompt_attributes(p);
        EXPECT_EQ(prompt_set_from_attributes(attrs[0].second, attrs[1].second, attrs[2].second, attrs[3].second, name), p);
    }
    fs::remove_all(dir);
}

TEST(Prompts, KnownHashes) {
    // Computed independently with Python's hashlib.
    const PromptSet small{{"x"}, {"{}"}, {"y"}, {"{} z"}};
    EXPECT_EQ(prompt_set_hash(small), "f2f1e32f69bd7b3e6d71d54e0420dd7d43502489f4b54ddd1ce489d687b8f3d8");
    PromptSet changed = bloodmnist_prompts();
    changed.concept_texts.back() += " ";
    EXPECT_NE(prompt_set_hash(changed), prompt_set_hash(bloodmnist_prompts()));
    // Moving an item between lists changes the hash (the lists are delimited).
    const PromptSet moved{{"x", "y"}, {"{}"}, {}, {"{} z"}};
    const PromptSet moved2{{"x"}, {"{}"}, {"y"}, {"{} z"}};
    EXPECT_NE(prompt_set_hash(moved), prompt_set_hash(moved2));
}

void expect_format_error(const fs::path& file, const std::string& content, const std::string& needle) {
    test::write_file(file, content);
    try {
        load_prompt_set(file);
        ADD_FAILURE() << "expected FormatError for " << content;
    } catch (const FormatError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(file.string()), std::string::npos) << what;
        EXPECT_NE(what.find(needle), std::string::npos) << what;
        EXPECT_EQ(what.find('\n'), std::string::npos) << "one-line message expected: " << what;
    }
}

TEST(Prompts, JsonFileRoundTripAndErrors) {
    const fs::path dir = test::make_temp_dir("prompt_files");
    const fs::path file = dir / "prompts.json";
    test::write_file(file, R"({"label_texts": ["a", "b"], "label_templates": ["photo of {}"],
        "concept_texts": ["c"], "concept_templates": ["{} here", "there {}"], "comment": "ignored"})");
    // The extra key is read past with one warning naming it.
    std::ostringstream log;
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log);
    spdlog::default_logger()->sinks().push_back(sink);
    const PromptSet p = load_prompt_set(file);
    spdlog::default_logger()->sinks().pop_back();
    EXPECT_NE(log.str().find("ignoring key \"comment\""), std::string::npos) << log.str();
    EXPECT_EQ(log.str().find("label_texts\""), std::string::npos) << log.str();
    EXPECT_EQ(p.label_texts, (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(p.concept_templates, (std::vector<std::string>{"{} here", "there {}"}));
    const auto concepts = expand_concept_templates(p);
    ASSERT_EQ(concepts.size(), 2u);
    EXPECT_EQ(concepts[1].id, "concept_prompts_t02");
    EXPECT_EQ(concepts[1].texts, (std::vector<std::string>{"there c"}));

    const std::string good_tail = R"("concept_texts": ["c"], "concept_templates": ["{}"]})";
    expect_format_error(file, R"({"label_texts": ["a"], )", "not valid JSON");
    // Latin-1 text: the byte is named, not echoed raw (the terminal would garble it).
    expect_format_error(file, "{\"label_texts\": [\"caf\xe9\"], ", "\\xE9");
    expect_format_error(file, "{\"label_texts\": [\"caf\xe9\"], ", "save it as UTF-8");
    try {
        load_prompt_set(file);
    } catch (const FormatError& e) {
        const std::string what = e.what();
        EXPECT_TRUE(std::all_of(what.begin(), what.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; }))
            << what;
    }
    expect_format_error(file, R"({"label_templates": ["{}"], )" + good_tail, "\"label_texts\"");
    expect_format_error(file, R"({"label_texts": "a", "label_templates": ["{}"], )" + good_tail, "\"label_texts\"");
    expect_format_error(file, R"({"label_texts": ["a", 3], "label_templates": ["{}"], )" + good_tail, "label_texts[1]");
    expect_format_error(file, R"({"label_texts": ["a"], "label_templates": ["no placeholder"], )" + good_tail,
                        "label_templates[0]");
    expect_format_error(file, R"({"label_texts": ["a"], "label_templates": ["{} and {}"], )" + good_tail,
                        "label_templates[0]");
    expect_format_error(file, R"({"label_texts": ["a"], "label_templates": ["{0}"], )" + good_tail, "label_templates[0]");
    // A lone brace before the placeholder as after it (Python's str.format refuses both).
    expect_format_error(file, R"({"label_texts": ["a"], "label_templates": ["a } of {}"], )" + good_tail,
                        "label_templates[0]");
    expect_format_error(file, R"({"label_texts": ["a"], "label_templates": ["a {} of }"], )" + good_tail,
                        "label_templates[0]");
    // A template quoted as the file spells it: a newline stays \n, a long one is cut.
    expect_format_error(file, R"({"label_texts": ["a"], "label_templates": ["two\nlines"], )" + good_tail,
                        "= \"two\\nlines\" must contain");
    expect_format_error(file, R"({"label_texts": ["a"], "label_templates": [")" + std::string(300, 'x') + R"("], )" +
                        good_tail, "xxx\"... (300 bytes) must contain");
    expect_format_error(file, R"({"label_texts": [], "label_templates": ["{}"], )" + good_tail, "\"label_texts\"");
    expect_format_error(file, R"(["label_texts"])", "object");
    expect_format_error(file, R"({"label_texts": ["a\u0000b"], "label_templates": ["{}"], )" + good_tail,
                        "\"label_texts[0]\" holds a NUL character");
    EXPECT_THROW(load_prompt_set(dir / "missing.json"), NotFoundError);
    try {
        load_prompt_set(dir);
        ADD_FAILURE() << "a directory loaded";
    } catch (const NotFoundError& e) {
        EXPECT_NE(std::string(e.what()).find("is a directory"), std::string::npos) << e.what();
    }
    EXPECT_THROW(prompt_set_from_attributes(R"(["a"])", "[1]", R"(["c"])", R"(["{}"])", "x.h5"), FormatError);
    fs::remove_all(dir);
}

}  // namespace
}  // namespace fstore
