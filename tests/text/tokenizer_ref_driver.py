"""Produces reference cases for tests/text: texts, a vocab / SentencePiece model, and the
ids the Python references (tests/python/fstore_ref) give for them.

    tokenizer_ref_driver.py wordpiece OUTDIR      -> OUTDIR/vocab.txt, OUTDIR/cases.json
    tokenizer_ref_driver.py sentencepiece OUTDIR  -> OUTDIR/spm_*.model, OUTDIR/cases.json
    tokenizer_ref_driver.py prompts OUTDIR        -> OUTDIR/cases.json (hashes, attributes)
    tokenizer_ref_driver.py unicode OUTDIR        -> OUTDIR/cases.json (lower/NFD/NFC/categories)

Deterministic (fixed seeds), so a failure reproduces.
"""
import io
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from fstore_ref import prompts as ref_prompts  # noqa: E402
from fstore_ref import tokenize as ref_tokenize  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Characters that exercise every branch of the BERT pre-tokenizer.
POOL = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") * 3
    + list(" " * 20)
    + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    + ["\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u1680", "\u2000", "\u2028",
       "\u2029", "\u3000", "\u200b", "\ufeff", "\x00", "\x07", "\x7f", "\ufffd", "\U000e0001",
       "\ue000", "\u0378"]
    + list("éÉñüÅçøßﬁǅİıΣςάΏйЁїÀÈÌÒÙâêîôûÄÖÜäöüÿŸČčŠšŽžŁłŒœÆæ")
    + ["\u0301", "\u0308", "\u0327", "\u0323", "\u0302", "\u031b", "\u0345", "\u0334"]
    + list("한글") + ["\u1100", "\u1161", "\u11a8"]
    + list("中文汉字") + ["\U00020000", "\uf900", "\u2f800"[:1]]
    + list("ＡＢ！、。「」") + ["😀", "👍", "🏽", "∑", "±", "°", "€", "£", "§", "¶", "«", "»", "—", "–", "…", "‘", "’", "“", "”"]
    + list("مرحبا") + ["\u064b", "\u0651"] + list("नमस्ते") + list("שָׁלוֹם") + list("สวัสดี")
    + ["\u212b", "\u2126", "\u212a", "\u1e9e", "\u01c4", "\u0130", "\u03a3"]
)

WORD_CHUNKS = ["[CLS]", "[cls]", "[MASK]", "[UNK]", "[SEP]", "[PAD]", "[mask]", "a" * 100, "a" * 101,
               "ab" * 60, "naïve", "Café", "cafe\u0301", "NUCLEUS", "cyto-plasmic", "e\u0323\u0302",
               "e\u0302\u0323", "\u1100\u1161\u11a8", "ΌΛΑ", "ΟΔΟΣ", "Ёж", "Straße"]


def random_text(rng):
    kind = rng.random()
    if kind < 0.45:
        return "".join(rng.choice(POOL) for _ in range(rng.randint(0, 40)))
    if kind < 0.8:
        words = ref_prompts.all_prompt_texts()
        parts = []
        for _ in range(rng.randint(1, 4)):
            w = rng.choice(words + WORD_CHUNKS)
            if rng.random() < 0.3:
                w = w.upper()
            if rng.random() < 0.3:
                i = rng.randint(0, len(w))
                w = w[:i] + rng.choice(POOL) + w[i:]
            parts.append(w)
        return rng.choice([" ", "", "\t", ", ", "/"]).join(parts)
    # Any code point at all (no surrogates: they cannot be UTF-8 encoded).
    out = []
    for _ in range(rng.randint(1, 12)):
        cp = rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0x2FFF), rng.randint(0x3000, 0xD7FF),
                         rng.randint(0xE000, 0xFFFF), rng.randint(0x10000, 0x10FFFF)])
        out.append(chr(cp))
    return "".join(out)


def build_vocab(rng):
    """A vocab with whole words, word pieces and single characters, deterministic."""
    tokens = list(SPECIALS)
    seen = set(tokens)

    def add(t):
        if t and t not in seen and "\n" not in t and "\r" not in t:
            seen.add(t)
            tokens.append(t)

    probe_lower = ref_tokenize.WordPieceRef("\n".join(SPECIALS) + "\n", lowercase=True, strip_accents=True)
    probe_cased = ref_tokenize.WordPieceRef("\n".join(SPECIALS) + "\n", lowercase=False, strip_accents=False)
    words = set()
    for text in ref_prompts.all_prompt_texts() + WORD_CHUNKS:
        words.update(probe_lower.basic_tokenize(text))
        words.update(probe_cased.basic_tokenize(text))
    for w in sorted(words):
        if rng.random() < 0.6:
            add(w)
        if len(w) > 3:
            cut = rng.randint(1, len(w) - 1)
            add(w[:cut])
            add("##" + w[cut:])
            if rng.random() < 0.5:
                cut2 = rng.randint(1, len(w) - 1)
                add("##" + w[cut2:])
    chars = set()
    for c in POOL:
        for form in {c, c.lower()} | set(probe_lower.basic_tokenize(c)):
            chars.update(form)
    for c in sorted(chars):
        if rng.random() < 0.8:
            add(c)
        if rng.random() < 0.6:
            add("##" + c)
    add("##a")
    return tokens


def wordpiece(outdir):
    rng = random.Random(1234)
    tokens = build_vocab(rng)
    vocab_text = "\n".join(tokens) + "\n"
    with open(os.path.join(outdir, "vocab.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(vocab_text)
    texts = ref_prompts.all_prompt_texts() + WORD_CHUNKS + [random_text(rng) for _ in range(700)]
    texts += [" ".join(texts[i:i + 8]) for i in range(0, 80, 8)]  # long: hits truncation
    cases = []
    for lowercase, strip_accents, context_length in [(True, True, 77), (True, False, 16),
                                                      (False, False, 77), (False, True, 40)]:
        ref = ref_tokenize.WordPieceRef(vocab_text, lowercase=lowercase, strip_accents=strip_accents,
                                        context_length=context_length)
        cases.append({"lowercase": lowercase, "strip_accents": strip_accents,
                      "context_length": context_length, "texts": texts,
                      "tokens": [ref.tokenize(t) for t in texts],
                      "ids": [ref.encode(t) for t in texts]})
    json.dump({"vocab_size": len(tokens), "cases": cases}, open(os.path.join(outdir, "cases.json"), "w"))


def train_spm(sentences, **options):
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model,
                                   model_type="unigram", vocab_size=180, hard_vocab_limit=False,
                                   character_coverage=1.0, minloglevel=2, **options)
    return model.getvalue()


def sentencepiece(outdir):
    rng = random.Random(99)
    prompts = ref_prompts.all_prompt_texts()
    sentences = prompts + [p.lower() for p in prompts]
    models = {
        "spm_pad.model": train_spm(sentences, unk_id=0, bos_id=1, eos_id=2, pad_id=3),
        "spm_nopad.model": train_spm(sentences, unk_id=2, bos_id=-1, eos_id=1, pad_id=-1),
    }
    for name, data in models.items():
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(data)
    texts = prompts + WORD_CHUNKS + [random_text(rng) for _ in range(400)]
    texts += [" ".join(texts[i:i + 8]) for i in range(0, 80, 8)]
    configs = [
        ("spm_pad.model", {"lowercase": False, "add_bos": False, "add_eos": True, "pad_id": -1,
                           "padding": "max_length"}, 77),
        ("spm_pad.model", {"lowercase": True, "add_bos": True, "add_eos": True, "pad_id": -1,
                           "padding": "longest"}, 12),
        ("spm_nopad.model", {"lowercase": True, "add_bos": False, "add_eos": True, "pad_id": 0,
                             "padding": "max_length"}, 20),
    ]
    cases = []
    for model, config, context_length in configs:
        ref = ref_tokenize.SentencePieceRef.from_config(config, models[model], context_length)
        batch, lengths = ref.encode_batch(texts[:30])
        cases.append({"model": model, "config": config, "context_length": context_length,
                      "texts": texts, "ids": [ref.encode(t) for t in texts], "pad_id": ref.pad_id,
                      "batch_ids": batch, "batch_lengths": lengths})
    json.dump({"cases": cases}, open(os.path.join(outdir, "cases.json"), "w"))


def prompts(outdir):
    p = ref_prompts.bloodmnist_prompts()
    odd = {"label_texts": ["naïve cell", "\"quoted\" \\ back", "tab\tnew\nline", "😀 emoji", "del\x7f"],
           "label_templates": ["{} ☃"], "concept_texts": ["x"], "concept_templates": ["{}"]}
    out = {}
    for name, ps in (("bloodmnist", p), ("odd", odd)):
        out[name] = {"prompts": ps, "attributes": ref_prompts.prompt_attributes(ps),
                     "templates": [{"id": i, "texts": t, "texts_hash": ref_prompts.texts_hash(t)}
                                   for i, t in ref_prompts.expand(ps)]}
    json.dump(out, open(os.path.join(outdir, "cases.json"), "w"))


def unicode_cases(outdir):
    import unicodedata

    rng = random.Random(7)
    singles = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        lower, nfd, nfc = c.lower(), unicodedata.normalize("NFD", c), unicodedata.normalize("NFC", c)
        if lower != c or nfd != c or nfc != c:
            singles.append([cp, lower, nfd, nfc])
    marks = [chr(cp) for cp in range(0x300, 0x370)] + ["\u0591", "\u05b0", "\u093c", "\u094d", "\u3099",
                                                       "\u309a", "\u0f71", "\u0f72", "\u0f74", "\U0001d165"]
    bases = list("aeiouAEIOUnNcCsSzZyYwWhH") + ["\u0391", "\u03b1", "\u0415", "\u0435", "\u3046", "\u304b",
                                               "\u0f40", "\u1100", "\u1161", "\u11a8", "\uac00", "\uac01",
                                               "\u0928", "\u05d0", "\u1e00", "\u00c5", "\u212b", "\u0344"]
    sequences = []
    for _ in range(4000):
        text = "".join(rng.choice(bases) if rng.random() < 0.45 else rng.choice(marks)
                       for _ in range(rng.randint(1, 8)))
        sequences.append([text, unicodedata.normalize("NFD", text), unicodedata.normalize("NFC", text)])
    probes = list(range(0x3000)) + [rng.randint(0x3000, 0x10FFFF) for _ in range(30000)]
    flags = []
    for cp in probes:
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        cat = unicodedata.category(c)
        flags.append([cp, (1 if cat.startswith("C") else 0) | (2 if cat == "Zs" else 0)
                      | (4 if cat.startswith("P") else 0) | (8 if cat == "Mn" else 0) | (16 if c.isspace() else 0)])
    json.dump({"singles": singles, "sequences": sequences, "flags": flags},
              open(os.path.join(outdir, "cases.json"), "w", encoding="utf-8"))


if __name__ == "__main__":
    mode, outdir = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    {"wordpiece": wordpiece, "sentencepiece": sentencepiece, "prompts": prompts,
     "unicode": unicode_cases}[mode](outdir)
