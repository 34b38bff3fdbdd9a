"""Reference prompts: BloodMNIST defaults, template expansion and the prompt attributes,
as in reference-store.md ("Template ids and prompts", "Root attributes")."""
import hashlib
import json

LABEL_TEXTS = ["basophil", "eosinophil", "erythroblast", "immature granulocytes",
               "lymphocyte", "monocyte", "neutrophil", "platelet"]
LABEL_TEMPLATES = ["a microscopic image of a {} cell", "a peripheral blood smear image of a {}",
                   "a bloodcell of {}"]
CONCEPT_TEXTS = ["Segmented nucleus", "Band nucleus (band form)", "Reniform / indented nucleus",
                 "Round nucleus", "Fine azurophilic granules", "Eosinophilic granules",
                 "Basophilic granules", "Basophilic cytoplasm", "Cytoplasmic vacuoles",
                 "High nuclear-to-cytoplasmic ratio", "Pale cytoplasm",
                 "Nucleated erythrocyte (erythroblast)", "Platelet fragments / clumps",
                 "Stain precipitate (artifact)", "Overlapping cell clumps (artifact)"]
CONCEPT_TEMPLATES = ["a cell photo with sign of {}", "a photo of a cell with {}",
                     "a cell image indicating {}", "an image of a cell showing {}",
                     "blood cell with {}", "a blood cell photo with sign of {}",
                     "a photo of a blood cell with {}", "a blood cell image indicating {}",
                     "an image of blood cell showing {}"]


def bloodmnist_prompts():
    return {"label_texts": list(LABEL_TEXTS), "label_templates": list(LABEL_TEMPLATES),
            "concept_texts": list(CONCEPT_TEXTS), "concept_templates": list(CONCEPT_TEMPLATES)}


def expand(prompts):
    """-> [(template_id, [texts])]: concept templates first, then label templates."""
    out = []
    for j, template in enumerate(prompts["concept_templates"], 1):
        out.append(("concept_prompts_t%02d" % j, [template.replace("{}", c, 1) for c in prompts["concept_texts"]]))
    for j, template in enumerate(prompts["label_templates"], 1):
        out.append(("label_prompts_t%02d" % j, [template.replace("{}", c, 1) for c in prompts["label_texts"]]))
    return out


def all_prompt_texts(prompts=None):
    """Every text the text stage encodes (for tokenizer tests)."""
    return [t for _, texts in expand(prompts or bloodmnist_prompts()) for t in texts]


def texts_hash(texts):
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


def prompt_attributes(prompts):
    """The root attributes the reference writes (json.dumps with default arguments)."""
    return {"label_texts": json.dumps(prompts["label_texts"]),
            "prompt_temp_for_labels": json.dumps(prompts["label_templates"]),
            "concept_texts": json.dumps(prompts["concept_texts"]),
            "prompt_temp_for_concepts": json.dumps(prompts["concept_templates"])}
