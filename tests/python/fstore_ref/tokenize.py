"""Reference tokenizers: what the Python pipeline feeds its text encoder.

`WordPieceRef` is a pure-Python transcription of HF transformers' slow BertTokenizer
(PreTrainedTokenizer.tokenize + BasicTokenizer + WordpieceTokenizer), written from its
source with `unicodedata`, so tests need no `transformers` install:
  1. with lowercase: each character lowered, except literal special tokens;
  2. special tokens ([UNK] [SEP] [PAD] [CLS] [MASK]) split out, kept whole;
  3. BasicTokenizer: clean (drop NUL, U+FFFD, category C* except \\t\\n\\r; whitespace ->
     " "), spaces around CJK ideographs, NFC, whitespace split; per word: lower, strip
     accents (NFD, drop Mn), split off punctuation (ASCII punct + category P*);
  4. WordPiece: greedy longest-match-first with "##" continuations; unk for words that
     cannot be matched or are longer than 100 characters;
  5. [CLS] ids [SEP], truncated to context_length keeping [SEP]; batches padded with the
     pad id to the longest row ("longest") or to context_length ("max_length").

`SentencePieceRef` wraps Python's `sentencepiece` the way fstore's SentencePiece backend
does: optional per-character lowercase, [BOS] ids [EOS] with truncation keeping EOS,
padding with the configured (or the model's) pad id.

Both take the "tokenizer" object of an archive's fstore/config.json (see design.md,
"Model archive") via `from_config(config, file_bytes, context_length)`.

Not named to be run as a script (it shadows the stdlib `tokenize` module in its own
directory); import it as `fstore_ref.tokenize`.
"""
import unicodedata

MAX_INPUT_CHARS_PER_WORD = 100


def _lower_chars(text):
    return "".join(c.lower() for c in text)


def _is_whitespace(char):
    if char in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(char) == "Zs"


def _is_control(char):
    if char in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(char).startswith("C")


def _is_punctuation(char):
    cp = ord(char)
    if (33 <= cp <= 47) or (58 <= cp <= 64) or (91 <= cp <= 96) or (123 <= cp <= 126):
        return True
    return unicodedata.category(char).startswith("P")


def _is_chinese_char(cp):
    return ((0x4E00 <= cp <= 0x9FFF) or (0x3400 <= cp <= 0x4DBF) or (0x20000 <= cp <= 0x2A6DF)
            or (0x2A700 <= cp <= 0x2B73F) or (0x2B740 <= cp <= 0x2B81F) or (0x2B820 <= cp <= 0x2CEAF)
            or (0xF900 <= cp <= 0xFAFF) or (0x2F800 <= cp <= 0x2FA1F))


def _whitespace_tokenize(text):
    text = text.strip()
    return text.split() if text else []


def load_vocab_text(text):
    """vocab.txt content (str) -> {token: id}; id = line number, a repeated token keeps its last."""
    vocab = {}
    # Python's text mode reads \n, \r\n and \r as line ends (readlines + rstrip("\n") in HF).
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for index, token in enumerate(lines):
        vocab[token] = index
    return vocab


class WordPieceRef:
    def __init__(self, vocab, lowercase=True, strip_accents=True, cls_token="[CLS]",
                 sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]", context_length=77,
                 padding="longest"):
        if isinstance(vocab, (bytes, bytearray)):
            vocab = vocab.decode("utf-8")
        self.vocab = load_vocab_text(vocab) if isinstance(vocab, str) else dict(vocab)
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.cls_token, self.sep_token = cls_token, sep_token
        self.pad_token, self.unk_token = pad_token, unk_token
        self.context_length = context_length
        self.padding = padding
        # HF's all_special_tokens order (unk, sep, pad, cls, mask).
        self.specials = [unk_token, sep_token, pad_token, cls_token, "[MASK]"]
        for token in (unk_token, cls_token, sep_token, pad_token):
            if token not in self.vocab:
                raise ValueError("special token %r is not in the vocab" % token)

    @classmethod
    def from_config(cls, config, file_bytes, context_length):
        return cls(file_bytes, lowercase=config["lowercase"], strip_accents=config["strip_accents"],
                   cls_token=config["cls_token"], sep_token=config["sep_token"],
                   pad_token=config["pad_token"], unk_token=config["unk_token"],
                   context_length=context_length, padding=config["padding"])

    @property
    def pad_id(self):
        return self.vocab[self.pad_token]

    # -- PreTrainedTokenizer.tokenize ---------------------------------------------------
    def _match_special(self, text, pos, longest):
        best = ""
        for s in self.specials:
            if s and len(s) > len(best) and text.startswith(s, pos):
                best = s
                if not longest:
                    break
        return best

    def tokenize(self, text):
        if self.lowercase:
            out, i = [], 0
            while i < len(text):
                s = self._match_special(text, i, longest=False)
                if s:
                    out.append(s)
                    i += len(s)
                else:
                    out.append(text[i].lower())
                    i += 1
            text = "".join(out)
        tokens, start, i = [], 0, 0
        while i < len(text):
            s = self._match_special(text, i, longest=True)
            if s:
                tokens.extend(self._tokenize_segment(text[start:i]))
                tokens.append(s)
                i += len(s)
                start = i
            else:
                i += 1
        tokens.extend(self._tokenize_segment(text[start:]))
        return tokens

    def _tokenize_segment(self, text):
        out = []
        for word in self.basic_tokenize(text):
            out.extend(self.wordpiece(word))
        return out

    # -- BasicTokenizer ----------------------------------------------------------------
    def basic_tokenize(self, text):
        never_split = set(self.specials)
        text = self._clean_text(text)
        text = self._tokenize_chinese_chars(text)
        text = unicodedata.normalize("NFC", text)
        split_tokens = []
        for token in _whitespace_tokenize(text):
            if token not in never_split:
                if self.lowercase:
                    token = token.lower()
                if self.strip_accents:
                    token = self._run_strip_accents(token)
            split_tokens.extend(self._run_split_on_punc(token, never_split))
        return _whitespace_tokenize(" ".join(split_tokens))

    @staticmethod
    def _clean_text(text):
        output = []
        for char in text:
            cp = ord(char)
            if cp == 0 or cp == 0xFFFD or _is_control(char):
                continue
            output.append(" " if _is_whitespace(char) else char)
        return "".join(output)

    @staticmethod
    def _tokenize_chinese_chars(text):
        output = []
        for char in text:
            if _is_chinese_char(ord(char)):
                output.extend((" ", char, " "))
            else:
                output.append(char)
        return "".join(output)

    @staticmethod
    def _run_strip_accents(text):
        text = unicodedata.normalize("NFD", text)
        return "".join(c for c in text if unicodedata.category(c) != "Mn")

    @staticmethod
    def _run_split_on_punc(text, never_split):
        if text in never_split:
            return [text]
        output, start_new_word = [], True
        for char in text:
            if _is_punctuation(char):
                output.append([char])
                start_new_word = True
            else:
                if start_new_word:
                    output.append([])
                start_new_word = False
                output[-1].append(char)
        return ["".join(x) for x in output]

    # -- WordpieceTokenizer ------------------------------------------------------------
    def wordpiece(self, token):
        output = []
        for word in _whitespace_tokenize(token):
            chars = list(word)
            if len(chars) > MAX_INPUT_CHARS_PER_WORD:
                output.append(self.unk_token)
                continue
            sub_tokens, start, bad = [], 0, False
            while start < len(chars):
                end, current = len(chars), None
                while start < end:
                    piece = "".join(chars[start:end])
                    if start > 0:
                        piece = "##" + piece
                    if piece in self.vocab:
                        current = piece
                        break
                    end -= 1
                if current is None:
                    bad = True
                    break
                sub_tokens.append(current)
                start = end
            output.extend([self.unk_token] if bad else sub_tokens)
        return output

    # -- ids -----------------------------------------------------------------------------
    def convert_tokens_to_ids(self, tokens):
        unk = self.vocab[self.unk_token]
        return [self.vocab.get(t, unk) for t in tokens]

    def encode(self, text):
        ids = self.convert_tokens_to_ids(self.tokenize(text))[: self.context_length - 2]
        return [self.vocab[self.cls_token]] + ids + [self.vocab[self.sep_token]]

    def encode_batch(self, texts):
        return _pad([self.encode(t) for t in texts], self.pad_id,
                    self.context_length if self.padding == "max_length" else 0)


class SentencePieceRef:
    def __init__(self, model_bytes, lowercase=False, add_bos=False, add_eos=True, pad_id=-1,
                 context_length=77, padding="max_length"):
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor()
        self.sp.LoadFromSerializedProto(bytes(model_bytes))
        self.lowercase = lowercase
        self.bos_id = self.sp.bos_id() if add_bos else -1
        self.eos_id = self.sp.eos_id() if add_eos else -1
        if (add_bos and self.bos_id < 0) or (add_eos and self.eos_id < 0):
            raise ValueError("the model has no BOS/EOS id")
        self._pad_id = pad_id if pad_id >= 0 else self.sp.pad_id()
        if self._pad_id < 0:
            raise ValueError("no pad id")
        self.context_length = context_length
        self.padding = padding

    @classmethod
    def from_config(cls, config, file_bytes, context_length):
        return cls(file_bytes, lowercase=config["lowercase"], add_bos=config["add_bos"],
                   add_eos=config["add_eos"], pad_id=config["pad_id"],
                   context_length=context_length, padding=config["padding"])

    @property
    def pad_id(self):
        return self._pad_id

    def encode(self, text):
        if self.lowercase:
            text = _lower_chars(text)
        ids = list(self.sp.EncodeAsIds(text))
        specials = (self.bos_id >= 0) + (self.eos_id >= 0)
        ids = ids[: self.context_length - specials]
        return ([self.bos_id] if self.bos_id >= 0 else []) + ids + ([self.eos_id] if self.eos_id >= 0 else [])

    def encode_batch(self, texts):
        return _pad([self.encode(t) for t in texts], self.pad_id,
                    self.context_length if self.padding == "max_length" else 0)


def _pad(rows, pad_id, fixed_length):
    """-> (input_ids as a list of equal-length lists, unpadded lengths)."""
    length = max([fixed_length] + [len(r) for r in rows]) if rows else 0
    return [r + [pad_id] * (length - len(r)) for r in rows], [len(r) for r in rows]


def from_config(config, file_bytes, context_length):
    """The reference tokenizer for an archive's "tokenizer" config object."""
    if config["type"] == "wordpiece":
        return WordPieceRef.from_config(config, file_bytes, context_length)
    if config["type"] == "sentencepiece":
        return SentencePieceRef.from_config(config, file_bytes, context_length)
    raise ValueError("unknown tokenizer type %r" % config["type"])
