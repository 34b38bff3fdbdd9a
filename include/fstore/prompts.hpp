// Prompts: the text side of a feature store (docs: reference-store.md "Template ids and
// prompts").
//
// A PromptSet holds label names, concept names and the templates they are put into.
// Each template contains exactly one "{}"; expanding concept template j (1-based) gives
// the template id "concept_prompts_tNN" (NN = j, at least two digits) whose texts are the
// template with "{}" replaced by each concept, in concept order; label templates give
// "label_prompts_tNN" the same way. The text stage encodes each template's texts as one
// batch and writes them under /templates/<id>.
//
// Sources: bloodmnist_prompts() (the reference defaults) or a JSON file
//   {"label_texts": [...], "label_templates": [...],
//    "concept_texts": [...], "concept_templates": [...]}
// whose four keys are all required, each a non-empty list of non-empty strings.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace fstore {

struct PromptSet {
    std::vector<std::string> label_texts;
    std::vector<std::string> label_templates;
    std::vector<std::string> concept_texts;
    std::vector<std::string> concept_templates;

    bool operator==(const PromptSet& other) const {
        return label_texts == other.label_texts && label_templates == other.label_templates &&
               concept_texts == other.concept_texts && concept_templates == other.concept_templates;
    }
    bool operator!=(const PromptSet& other) const { return !(*this == other); }
};

// BloodMNIST's 8 labels x 3 templates and 15 concepts x 9 templates, texts and order
// exactly as the reference pipeline has them.
PromptSet bloodmnist_prompts();

// Reads a prompt JSON file. Unreadable file -> NotFoundError; bad JSON, a missing key, a
// wrong type, an empty list or a template without exactly one "{}" -> FormatError naming
// the file and the key (e.g. "concept_templates[2]"). Other keys are ignored, each with a
// warning naming it.
PromptSet load_prompt_set(const std::filesystem::path& file);
// The same from parsed JSON; `source` names it in error messages.
PromptSet prompt_set_from_json(const nlohmann::json& json, const std::string& source);
// Checks the rules above (throws FormatError naming `source` and the key).
void validate_prompt_set(const PromptSet& prompts, const std::string& source);

// One template expanded: its id, the template, and its texts (one per label/concept).
struct TemplateTexts {
    std::string id;
    std::string template_text;
    std::vector<std::string> texts;
};

// "concept_prompts_t01", "label_prompts_t12", ...
std::string concept_template_id(std::size_t index_from_1);
std::string label_template_id(std::size_t index_from_1);
// Whether `id` is a prompt set's template id as concept_template_id / label_template_id
// write it ("concept_prompts_t01", "label_prompts_t123"), as opposed to a group someone
// added under another name ("concept_prompts_tumor" included).
bool is_prompt_template_id(const std::string& id);
// Puts `text` into the template's "{}".
std::string fill_template(const std::string& template_text, const std::string& text);

std::vector<TemplateTexts> expand_concept_templates(const PromptSet& prompts);
std::vector<TemplateTexts> expand_label_templates(const PromptSet& prompts);
// Concept templates first, then label templates.
std::vector<TemplateTexts> expand_templates(const PromptSet& prompts);
// The same, for a prompt set read back from a store, as the reference expanded it: a
// template without "{}" (which fstore's own prompt files may not hold, but the
// reference stores) expands to itself instead of throwing.
std::vector<TemplateTexts> expand_stored_templates(const PromptSet& prompts);

// (The template group's texts_hash is fstore::texts_hash in feature_store.hpp.)

// A stable fingerprint of a PromptSet, for resume checks: hex SHA-256 over, for each of
// label_texts, label_templates, concept_texts, concept_templates in that order, the key
// name, a zero byte, the item count in decimal, a zero byte, then each item followed by a
// zero byte. Equal PromptSets hash equal on every platform and version.
std::string prompt_set_hash(const PromptSet& prompts);

// The root attributes the text stage writes, as (name, value) in this order:
// label_texts, prompt_temp_for_labels, concept_texts, prompt_temp_for_concepts. Each
// value is a JSON list formatted like Python's json.dumps defaults (", " separators,
// non-ASCII as \uXXXX escapes), byte-identical to the reference's attributes.
std::vector<std::pair<std::string, std::string>> prompt_attributes(const PromptSet& prompts);

// Python json.dumps(list_of_str) with default arguments.
std::string python_json_list(const std::vector<std::string>& items);

// Rebuilds a PromptSet from the four root attributes' values (JSON lists), e.g. to
// compare a store's prompts with the ones about to be written. FormatError naming
// `source` and the attribute when one is not a JSON list of strings.
PromptSet prompt_set_from_attributes(const std::string& label_texts, const std::string& label_templates,
                                     const std::string& concept_texts,
                                     const std::string& concept_templates, const std::string& source);

}  // namespace fstore
