#include "fstore/prompts.hpp"

#include <algorithm>
#include <fstream>
#include <memory>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "fstore/digest.hpp"
#include "fstore/error.hpp"
#include "unicode.hpp"

namespace fstore {
namespace {

constexpr const char* kKeys[] = {"label_texts", "label_templates", "concept_texts", "concept_templates"};

std::vector<std::string>* member(PromptSet& prompts, std::size_t key) {
    switch (key) {
        case 0: return &prompts.label_texts;
        case 1: return &prompts.label_templates;
        case 2: return &prompts.concept_texts;
        default: return &prompts.concept_templates;
    }
}

const std::vector<std::string>& member(const PromptSet& prompts, std::size_t key) {
    return *member(const_cast<PromptSet&>(prompts), key);
}

std::string template_id(const char* prefix, std::size_t index_from_1) {
    return fmt::format("{}_prompts_t{:02d}", prefix, index_from_1);
}

// The reference's fill: the first "{}" replaced; a template without one is its own text.
std::string fill_template_as_stored(const std::string& template_text, const std::string& text) {
    const auto pos = template_text.find("{}");
    return pos == std::string::npos ? template_text : std::string(template_text).replace(pos, 2, text);
}

using FillTemplate = std::string (*)(const std::string&, const std::string&);

std::vector<TemplateTexts> expand(const char* prefix, const std::vector<std::string>& templates,
                                  const std::vector<std::string>& texts, FillTemplate fill) {
    std::vector<TemplateTexts> out;
    out.reserve(templates.size());
    for (std::size_t j = 0; j < templates.size(); ++j) {
        TemplateTexts t{template_id(prefix, j + 1), templates[j], {}};
        t.texts.reserve(texts.size());
        for (const auto& text : texts) t.texts.push_back(fill(templates[j], text));
        out.push_back(std::move(t));
    }
    return out;
}

// Concept templates first, then label templates.
std::vector<TemplateTexts> expand_all(const PromptSet& prompts, FillTemplate fill) {
    auto out = expand("concept", prompts.concept_templates, prompts.concept_texts, fill);
    auto labels = expand("label", prompts.label_templates, prompts.label_texts, fill);
    out.insert(out.end(), std::make_move_iterator(labels.begin()), std::make_move_iterator(labels.end()));
    return out;
}

// An item as the prompt file spells it (a newline as \n), cut short when long, so that a
// message about it stays one line.
std::string shown_as_json(const std::string& item) {
    constexpr std::size_t kMaxBytes = 80;
    const bool cut = item.size() > kMaxBytes;
    return nlohmann::json(cut ? item.substr(0, kMaxBytes) : item)
               .dump(-1, ' ', false, nlohmann::json::error_handler_t::ignore) +
           (cut ? fmt::format("... ({} bytes)", item.size()) : "");
}

}  // namespace

PromptSet bloodmnist_prompts() {
    PromptSet p;
    p.label_texts = {"basophil",   "eosinophil", "erythroblast", "immature granulocytes",
                     "lymphocyte", "monocyte",   "neutrophil",   "platelet"};
    p.label_templates = {"a microscopic image of a {} cell", "a peripheral blood smear image of a {}",
                         "a bloodcell of {}"};
    p.concept_texts = {"Segmented nucleus",
                       "Band nucleus (band form)",
                       "Reniform / indented nucleus",
                       "Round nucleus",
                       "Fine azurophilic granules",
                       "Eosinophilic granules",
                       "Basophilic granules",
                       "Basophilic cytoplasm",
                       "Cytoplasmic vacuoles",
                       "High nuclear-to-cytoplasmic ratio",
                       "Pale cytoplasm",
                       "Nucleated erythrocyte (erythroblast)",
                       "Platelet fragments / clumps",
                       "Stain precipitate (artifact)",
                       "Overlapping cell clumps (artifact)"};
    p.concept_templates = {"a cell photo with sign of {}",   "a photo of a cell with {}",
                           "a cell image indicating {}",     "an image of a cell showing {}",
                           "blood cell with {}",             "a blood cell photo with sign of {}",
                           "a photo of a blood cell with {}", "a blood cell image indicating {}",
                           "an image of blood cell showing {}"};
    return p;
}

void validate_prompt_set(const PromptSet& prompts, const std::string& source) {
    for (std::size_t k = 0; k < 4; ++k) {
        const auto& items = member(prompts, k);
        if (items.empty()) {
            throw FormatError(fmt::format("prompts '{}': \"{}\" is an empty list: give at least one entry",
                                          source, kKeys[k]));
        }
        const bool is_template = k == 1 || k == 3;
        for (std::size_t i = 0; i < items.size(); ++i) {
            const std::string& item = items[i];
            if (item.empty()) {
                throw FormatError(fmt::format("prompts '{}': \"{}[{}]\" is an empty string: remove it or fill it in",
                                              source, kKeys[k], i));
            }
            if (item.find('\0') != std::string::npos) {  // HDF5 strings end at a NUL
                throw FormatError(fmt::format("prompts '{}': \"{}[{}]\" holds a NUL character (\\u0000): remove it",
                                              source, kKeys[k], i));
            }
            if (!is_template) continue;
            const auto first = item.find("{}");
            const bool one_placeholder = first != std::string::npos &&
                                         item.find('{', first + 1) == std::string::npos &&
                                         item.find('{') == first && item.find('}') == first + 1 &&
                                         item.find('}', first + 2) == std::string::npos;
            if (!one_placeholder) {
                throw FormatError(fmt::format(
                    "prompts '{}': template \"{}[{}]\" = {} must contain exactly one {{}} and no "
                    "other braces: write it like \"a photo of {{}}\"",
                    source, kKeys[k], i, shown_as_json(item)));
            }
        }
    }
}

PromptSet prompt_set_from_json(const nlohmann::json& json, const std::string& source) {
    if (!json.is_object()) {
        throw FormatError(fmt::format(
            "prompts '{}' must be a JSON object with keys label_texts, label_templates, "
            "concept_texts, concept_templates: fix the file",
            source));
    }
    for (const auto& [key, value] : json.items()) {
        if (std::find(std::begin(kKeys), std::end(kKeys), key) == std::end(kKeys)) {
            // Extra keys (a "_comment") are legal; a misspelt one shows up here too.
            spdlog::warn("prompts '{}': ignoring key \"{}\" (the keys read are label_texts, label_templates, "
                         "concept_texts, concept_templates)",
                         source, key);
        }
    }
    PromptSet prompts;
    for (std::size_t k = 0; k < 4; ++k) {
        auto it = json.find(kKeys[k]);
        if (it == json.end()) {
            throw FormatError(fmt::format("prompts '{}' has no \"{}\" key: add it (a list of strings)",
                                          source, kKeys[k]));
        }
        if (!it->is_array()) {
            throw FormatError(fmt::format("prompts '{}': \"{}\" must be a list of strings, not {}: fix the file",
                                          source, kKeys[k], it->type_name()));
        }
        auto& items = *member(prompts, k);
        for (std::size_t i = 0; i < it->size(); ++i) {
            const auto& item = (*it)[i];
            if (!item.is_string()) {
                throw FormatError(fmt::format("prompts '{}': \"{}[{}]\" must be a string, not {}: fix the file",
                                              source, kKeys[k], i, item.dump()));
            }
            items.push_back(item.get<std::string>());
        }
    }
    validate_prompt_set(prompts, source);
    return prompts;
}

PromptSet load_prompt_set(const std::filesystem::path& file) {
    std::error_code ec;
    if (std::filesystem::is_directory(file, ec)) {
        throw NotFoundError(fmt::format("prompts file '{}' is a directory: pass the JSON file inside it", file.string()));
    }
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        throw NotFoundError(fmt::format("cannot read prompts file '{}': check the path", file.string()));
    }
    std::ostringstream content;
    content << in.rdbuf();
    nlohmann::json json;
    try {
        json = nlohmann::json::parse(content.str());
    } catch (const nlohmann::json::parse_error& e) {
        // The parser quotes what it read last, raw: a byte that is not UTF-8 is shown as \xNN.
        std::string what;
        for (const char c : std::string(e.what())) {
            if (static_cast<unsigned char>(c) < 0x80) {
                what += c;
            } else {
                what += fmt::format("\\x{:02X}", static_cast<unsigned char>(c));
            }
        }
        const bool not_utf8 = what.find("ill-formed UTF-8") != std::string::npos;
        throw FormatError(fmt::format("prompts '{}' is not valid JSON ({}): {}", file.string(), what,
                                      not_utf8 ? "save it as UTF-8" : "fix the file"));
    }
    return prompt_set_from_json(json, file.string());
}

std::string concept_template_id(std::size_t index_from_1) { return template_id("concept", index_from_1); }
std::string label_template_id(std::size_t index_from_1) { return template_id("label", index_from_1); }

bool is_prompt_template_id(const std::string& id) {
    // Exactly what template_id writes: the kind, "_prompts_t", two or more digits.
    for (const char* prefix : {"concept_prompts_t", "label_prompts_t"}) {
        const std::string p = prefix;
        if (id.compare(0, p.size(), p) != 0) continue;
        const std::string number = id.substr(p.size());
        return number.size() >= 2 && std::all_of(number.begin(), number.end(), [](char c) { return c >= '0' && c <= '9'; });
    }
    return false;
}

std::string fill_template(const std::string& template_text, const std::string& text) {
    if (template_text.find("{}") == std::string::npos) {
        throw UsageError(fmt::format("template \"{}\" has no {{}} to put the text in: add one", template_text));
    }
    return fill_template_as_stored(template_text, text);
}

std::vector<TemplateTexts> expand_concept_templates(const PromptSet& prompts) {
    return expand("concept", prompts.concept_templates, prompts.concept_texts, fill_template);
}

std::vector<TemplateTexts> expand_label_templates(const PromptSet& prompts) {
    return expand("label", prompts.label_templates, prompts.label_texts, fill_template);
}

std::vector<TemplateTexts> expand_templates(const PromptSet& prompts) {
    return expand_all(prompts, fill_template);
}

std::vector<TemplateTexts> expand_stored_templates(const PromptSet& prompts) {
    return expand_all(prompts, fill_template_as_stored);
}

std::string prompt_set_hash(const PromptSet& prompts) {
    Digest sha = Digest::sha256();
    const auto field = [&sha](std::string_view text) {  // each field ends in one 0 byte
        sha.update(text);
        sha.update("", 1);
    };
    for (std::size_t k = 0; k < 4; ++k) {
        const auto& items = member(prompts, k);
        field(kKeys[k]);
        field(std::to_string(items.size()));
        for (const auto& item : items) field(item);
    }
    return sha.hex();
}

std::string python_json_list(const std::vector<std::string>& items) {
    std::string out = "[";
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += ", ";
        out += '"';
        for (char32_t cp : unicode::decode_utf8(items[i])) {
            switch (cp) {
                case U'"': out += "\\\""; break;
                case U'\\': out += "\\\\"; break;
                case U'\n': out += "\\n"; break;
                case U'\r': out += "\\r"; break;
                case U'\t': out += "\\t"; break;
                case U'\b': out += "\\b"; break;
                case U'\f': out += "\\f"; break;
                default:
                    if (cp < 0x20 || cp > 0x7E) {  // Python escapes all but printable ASCII
                        if (cp >= 0x10000) {  // UTF-16 surrogate pair, as Python writes it
                            const char32_t v = cp - 0x10000;
                            out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
                        } else {
                            out += fmt::format("\\u{:04x}", static_cast<unsigned>(cp));
                        }
                    } else {
                        out += static_cast<char>(cp);
                    }
            }
        }
        out += '"';
    }
    out += ']';
    return out;
}

std::vector<std::pair<std::string, std::string>> prompt_attributes(const PromptSet& prompts) {
    return {{"label_texts", python_json_list(prompts.label_texts)},
            {"prompt_temp_for_labels", python_json_list(prompts.label_templates)},
            {"concept_texts", python_json_list(prompts.concept_texts)},
            {"prompt_temp_for_concepts", python_json_list(prompts.concept_templates)}};
}

PromptSet prompt_set_from_attributes(const std::string& label_texts, const std::string& label_templates,
                                     const std::string& concept_texts,
                                     const std::string& concept_templates, const std::string& source) {
    const std::pair<const char*, const std::string*> attrs[] = {{"label_texts", &label_texts},
                                                                 {"prompt_temp_for_labels", &label_templates},
                                                                 {"concept_texts", &concept_texts},
                                                                 {"prompt_temp_for_concepts", &concept_templates}};
    PromptSet prompts;
    for (std::size_t k = 0; k < 4; ++k) {
        auto& items = *member(prompts, k);
        nlohmann::json json = nlohmann::json::parse(*attrs[k].second, nullptr, false);
        bool ok = json.is_array();
        for (const auto& item : json) ok = ok && item.is_string();
        if (!ok) {
            throw FormatError(fmt::format(
                "store '{}': attribute {} is not a JSON list of strings: rewrite the prompts with "
                "fstore build --no-resume",
                source, attrs[k].first));
        }
        for (const auto& item : json) items.push_back(item.get<std::string>());
    }
    return prompts;
}

}  // namespace fstore
