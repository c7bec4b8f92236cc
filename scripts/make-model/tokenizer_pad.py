"""Pads a small model's tokenizer.json to a real model's vocabulary size.

The random-weight models sample ids from the whole vocabulary of the real model, so every id
must decode; the prompts, though, should tokenize exactly as the tiny model's do (same special
tokens, chat template and merges), so Glance and transformers.js see the same ids as in the
tiny model's tests. Filler tokens are appended as plain vocabulary entries with no merge that
produces them: BPE only reaches a token through merges, so encoding is unchanged, and decoding
one gives readable text (" w12345"), which a benchmark's output can be checked by eye with.
"""

import json
import os
import shutil

# Byte-level BPE writes a space as "Ġ"; a leading space makes decoded filler read as words.
SPACE = "\u0120"


def filler_tokens(existing, count):
    """`count` deterministic token strings not in `existing`, in id order."""
    out, i = [], 0
    while len(out) < count:
        piece = f"{SPACE}w{i}"
        i += 1
        if piece not in existing:
            out.append(piece)
    return out


def pad_tokenizer(src_dir, dst_dir, vocab_size, model_max_length):
    """Copies tokenizer.json, tokenizer_config.json and special_tokens_map.json from `src_dir`,
    the vocabulary padded to `vocab_size` ids. Returns the token -> id map of the result."""
    with open(os.path.join(src_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    vocab = tok["model"]["vocab"]
    ids = sorted(vocab.values())
    # Filler ids follow the last one, so a gap would leave ids that decode to nothing.
    assert ids == list(range(len(ids))), "the source vocabulary's ids are not 0..n-1"
    assert len(vocab) <= vocab_size, f"the source vocabulary has {len(vocab)} tokens, more than {vocab_size}"
    for piece in filler_tokens(vocab, vocab_size - len(vocab)):
        vocab[piece] = len(vocab)
    with open(os.path.join(dst_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)

    with open(os.path.join(src_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config["model_max_length"] = model_max_length
    with open(os.path.join(dst_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
    special = os.path.join(src_dir, "special_tokens_map.json")
    if os.path.exists(special):
        shutil.copy(special, dst_dir)
    return vocab
