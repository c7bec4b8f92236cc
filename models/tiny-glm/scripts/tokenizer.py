"""A byte-level BPE tokenizer trained on the synthetic corpus, written as Hugging Face's tokenizer.json,
with GLM-OCR's special tokens.

`Tokenizer.encode` reproduces what the `tokenizers` library does with the written file (added
special tokens split out first, GPT-2 pre-tokenisation, byte-to-unicode mapping, merges by rank),
so the model trains on exactly the ids that Glance and transformers.js feed it. No merge involves a
digit, so every digit is its own token and numbers are read digit by digit.
"""

import json
import os
from collections import Counter

import regex

HERE = os.path.dirname(os.path.abspath(__file__))

# GLM-OCR's special tokens (research §6.3), ids 0.. in this order; ids never depend on the corpus.
SPECIAL_TOKENS = [
    "<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
    "<|begin_of_image|>", "<|end_of_image|>", "<|image|>", "<|begin_of_video|>", "<|end_of_video|>", "<|video|>",
    "<think>", "</think>", "/nothink", "<|begin_of_box|>", "<|end_of_box|>",
]

PRETOKENIZE = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
SPECIAL_SPLIT = regex.compile("(" + "|".join(regex.escape(t) for t in SPECIAL_TOKENS) + ")")
DIGITS = set("0123456789")

# GLM-OCR's chat template, verbatim from the research note (§2.5).
with open(os.path.join(HERE, "chat_template.jinja"), encoding="utf-8") as _f:
    CHAT_TEMPLATE = _f.read()


def render_prompt(question, thinking=True):
    """What CHAT_TEMPLATE renders for one user turn [image, text] with add_generation_prompt
    (checked against @huggingface/jinja by render_template.mjs); `<|image|>` is expanded later."""
    if thinking:
        return f"[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>{question}<|assistant|>\n"
    return f"[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>{question}/nothink<|assistant|>\n<think></think>\n"


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_MAP = bytes_to_unicode()
DIGIT_CHARS = {BYTE_MAP[ord(d)] for d in DIGITS}


def _pieces(text):
    return ["".join(BYTE_MAP[b] for b in p.encode("utf-8")) for p in PRETOKENIZE.findall(text)]


class Tokenizer:
    def __init__(self, merges):
        self.merges = merges
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        for ch in sorted(BYTE_MAP.values(), key=lambda c: ord(c)):
            self.vocab[ch] = len(self.vocab)
        for a, b in merges:
            self.vocab.setdefault(a + b, len(self.vocab))
        self.inverse = {i: t for t, i in self.vocab.items()}
        self.cache = {}

    @classmethod
    def train(cls, texts, vocab_size):
        words = Counter(p for t in texts for chunk in SPECIAL_SPLIT.split(t) if chunk not in SPECIAL_TOKENS
                        for p in _pieces(chunk))
        seqs = {w: list(w) for w in words}
        merges = []
        base = len(SPECIAL_TOKENS) + 256
        while base + len(merges) < vocab_size:
            pairs = Counter()
            for w, n in words.items():
                s = seqs[w]
                for i in range(len(s) - 1):
                    if DIGIT_CHARS & set(s[i] + s[i + 1]):
                        continue  # digits stay single tokens
                    pairs[(s[i], s[i + 1])] += n
            if not pairs:
                break
            pair, count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
            if count < 2:
                break
            merges.append(pair)
            for w in words:
                s = seqs[w]
                i, out = 0, []
                while i < len(s):
                    if i < len(s) - 1 and (s[i], s[i + 1]) == pair:
                        out.append(s[i] + s[i + 1])
                        i += 2
                    else:
                        out.append(s[i])
                        i += 1
                seqs[w] = out
        return cls(merges)

    def _bpe(self, piece):
        if piece in self.cache:
            return self.cache[piece]
        s = list(piece)
        while len(s) > 1:
            ranked = [(self.ranks.get((s[i], s[i + 1]), 1 << 30), i) for i in range(len(s) - 1)]
            rank, i = min(ranked)
            if rank == 1 << 30:
                break
            s = s[:i] + [s[i] + s[i + 1]] + s[i + 2:]
        ids = [self.vocab[t] for t in s]
        self.cache[piece] = ids
        return ids

    def encode(self, text):
        ids = []
        for chunk in SPECIAL_SPLIT.split(text):
            if not chunk:
                continue
            if chunk in SPECIAL_TOKENS:
                ids.append(self.vocab[chunk])
            else:
                for p in _pieces(chunk):
                    ids.extend(self._bpe(p))
        return ids

    def decode(self, ids, skip_special=True):
        inv = {v: k for k, v in BYTE_MAP.items()}
        out, buf = [], []
        for i in ids:
            t = self.inverse[i]
            if t in SPECIAL_TOKENS:
                out.append(bytes(buf).decode("utf-8", "replace"))
                buf = []
                if not skip_special:
                    out.append(t)
            else:
                buf.extend(inv[c] for c in t)
        out.append(bytes(buf).decode("utf-8", "replace"))
        return "".join(out)

    def token_id(self, token):
        return self.vocab[token]

    def save(self, folder, model_max_length):
        added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True} for i, t in enumerate(SPECIAL_TOKENS)]
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        tok = {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": byte_level,
            # The chat template writes [gMASK]<sop> itself, and transformers.js tokenizes with
            # add_special_tokens=true: no post-processor, so nothing is added.
            "post_processor": None,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": self.vocab, "merges": [[a, b] for a, b in self.merges]},
        }
        with open(f"{folder}/tokenizer.json", "w", encoding="utf-8") as f:
            json.dump(tok, f, ensure_ascii=False, indent=1)
        config = {
            "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added},
            "extra_special_tokens": SPECIAL_TOKENS,
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "padding_side": "left",
            "clean_up_tokenization_spaces": False,
            "do_lower_case": False,
            "model_max_length": model_max_length,
            "remove_space": False,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "processor_class": "Glm46VProcessor",
            "chat_template": CHAT_TEMPLATE,
        }
        with open(f"{folder}/tokenizer_config.json", "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)

    @classmethod
    def load(cls, folder):
        with open(f"{folder}/tokenizer.json", encoding="utf-8") as f:
            merges = [tuple(m) for m in json.load(f)["model"]["merges"]]
        return cls(merges)
