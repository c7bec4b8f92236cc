"""A byte-level BPE tokenizer trained on the synthetic corpus, written as Hugging Face's tokenizer.json.

`Tokenizer.encode` reproduces what the `tokenizers` library does with the written file (special
tokens split out first, GPT-2 pre-tokenisation, byte-to-unicode mapping, merges by rank), so the
model trains on exactly the ids that Glance and transformers.js will feed it.
"""

import json
from collections import Counter

import regex

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<end_of_utterance>",
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]

PRETOKENIZE = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
SPECIAL_SPLIT = regex.compile("(" + "|".join(regex.escape(t) for t in SPECIAL_TOKENS) + ")")

# SmolVLM's template, also accepting plain-string content as OpenAI-style clients send it.
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


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
            "post_processor": {**byte_level, "trim_offsets": False},
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": self.vocab, "merges": [[a, b] for a, b in self.merges]},
        }
        with open(f"{folder}/tokenizer.json", "w", encoding="utf-8") as f:
            json.dump(tok, f, ensure_ascii=False, indent=1)
        config = {
            "add_bos_token": False,
            "add_eos_token": False,
            "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added},
            "bos_token": "<|im_start|>",
            "eos_token": "<end_of_utterance>",
            "pad_token": "<|im_end|>",
            "unk_token": "<|endoftext|>",
            "clean_up_tokenization_spaces": False,
            "model_max_length": model_max_length,
            "tokenizer_class": "GPT2Tokenizer",
            "processor_class": "Idefics3Processor",
            "chat_template": CHAT_TEMPLATE,
        }
        with open(f"{folder}/tokenizer_config.json", "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)
        with open(f"{folder}/special_tokens_map.json", "w", encoding="utf-8") as f:
            json.dump({k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}, f, indent=1)

    @classmethod
    def load(cls, folder):
        with open(f"{folder}/tokenizer.json", encoding="utf-8") as f:
            merges = [tuple(m) for m in json.load(f)["model"]["merges"]]
        return cls(merges)
