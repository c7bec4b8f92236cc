"""Reference numbers from the PyTorch checkpoint for check_ort.mjs (the exported graphs, and
transformers.js, must give the same): held-out image 000 with its first question.

    /usr/bin/python3 models/tiny-glm/scripts/crosscheck.py /tmp/tiny-glm.pt   # writes /tmp/tiny-glm-ref/
"""

import json
import os
import sys

import numpy as np
import torch
from PIL import Image

from model import Config, GlmOcrModel, get_rope_index
from processor import to_patches
from tokenizer import Tokenizer, render_prompt

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_DIR = os.environ.get("TINY_GLM_DIR", os.path.dirname(HERE))
OUT = "/tmp/tiny-glm-ref"


def expand_image(prompt, grid, m):
    return prompt.replace("<|image|>", "<|image|>" * (grid[0] * grid[1] * grid[2] // m ** 2))


@torch.no_grad()
def greedy(model, tok, c, pv, grid, question, max_new=128):
    """Greedy answer, recomputing the whole sequence every step (no cache): an independent check
    of the graphs' cache path. Returns (token ids, prompt ids, positions, prefill logits)."""
    image_token_id = tok.token_id("<|image|>")
    eos = {tok.token_id("<|endoftext|>"), tok.token_id("<|user|>")}
    ids = tok.encode(expand_image(render_prompt(question), grid, c.merge_size))
    prompt = list(ids)
    feats = model.visual(torch.from_numpy(pv)[None], grid[1], grid[2])
    out, first = [], None
    for _ in range(max_new):
        pos, _ = get_rope_index(ids, [grid], image_token_id, c.merge_size)
        x = torch.tensor([ids])
        logits = model(feats, x, torch.ones_like(x), torch.tensor(pos)[:, None, :], image_token_id)
        if first is None:
            first = logits[0]
        t = int(logits[0, -1].argmax())
        if t in eos:
            break
        out.append(t)
        ids.append(t)
    return out, prompt, get_rope_index(prompt, [grid], image_token_id, c.merge_size), first


def main():
    ckpt = torch.load(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-glm.pt")
    c = Config(**ckpt["config"])
    model = GlmOcrModel(c)
    model.load_state_dict(ckpt["state"])
    model.eval()
    tok = Tokenizer.load(MODEL_DIR)
    row = json.loads(open(os.path.join(MODEL_DIR, "heldout/questions.jsonl"), encoding="utf-8").readline())
    pv, grid = to_patches(Image.open(os.path.join(MODEL_DIR, "heldout", row["image"])))
    tokens, prompt, (pos, nxt), logits = greedy(model, tok, c, pv, grid, row["question"], max_new=24)
    feats = model.visual(torch.from_numpy(pv)[None], grid[1], grid[2])[0]
    # Another grid, to check that the vision graph takes its grid from image_grid_thw.
    g2 = (1, 8, 12)
    rng = np.random.default_rng(0)
    pv2 = rng.standard_normal((g2[1] * g2[2], pv.shape[1])).astype(np.float32)
    feats2 = model.visual(torch.from_numpy(pv2)[None], g2[1], g2[2])[0]
    os.makedirs(OUT, exist_ok=True)
    pv.tofile(f"{OUT}/pixel_values.bin")
    pv2.tofile(f"{OUT}/pixel_values2.bin")
    json.dump({
        "question": row["question"], "image": row["image"], "grid": list(grid), "grid2": list(g2),
        "input_ids": prompt, "positions": pos, "next": nxt, "tokens": tokens, "text": tok.decode(tokens),
        "features_sum": float(feats.sum()), "features_0": feats[0, :8].tolist(), "features2_sum": float(feats2.sum()),
        "features2_last": feats2[-1, :8].tolist(), "prefill_logits_last": logits[-1, :8].tolist(),
        "prefill_logits_sum": float(logits.sum()),
    }, open(f"{OUT}/ref.json", "w"), ensure_ascii=False)
    print("tokens", tokens, repr(tok.decode(tokens)))


if __name__ == "__main__":
    main()
