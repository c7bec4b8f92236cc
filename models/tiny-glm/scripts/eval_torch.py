"""Answers the held-out questions with the PyTorch checkpoint (greedy, with a KV cache, prompts
exactly as the chat template renders them) and prints exact-match accuracy per kind and language.

    /usr/bin/python3 models/tiny-glm/scripts/eval_torch.py /tmp/tiny-glm.pt [--limit N] [--out FILE]
"""

import argparse
import json
import os
import time
from collections import defaultdict

import torch
from PIL import Image

from model import Config, GlmOcrModel, get_rope_index
from processor import to_patches
from tokenizer import Tokenizer, render_prompt

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_DIR = os.environ.get("TINY_GLM_DIR", os.path.dirname(HERE))


@torch.no_grad()
def answer(model, tok, c, features, grid, question, max_new=128, thinking=True):
    image_token_id = tok.token_id("<|image|>")
    eos = {tok.token_id("<|endoftext|>"), tok.token_id("<|user|>")}
    n_img = grid[0] * grid[1] * grid[2] // c.merge_size ** 2
    ids = tok.encode(render_prompt(question, thinking).replace("<|image|>", "<|image|>" * n_img))
    pos, nxt = get_rope_index(ids, [grid], image_token_id, c.merge_size)
    x = torch.tensor([ids])
    lm = model.language_model
    hidden, past = lm(model.embed(features, x, image_token_id), torch.ones_like(x), torch.tensor(pos)[:, None, :])
    out = []
    total = len(ids)
    for _ in range(max_new):
        t = int(model.lm_head(hidden[0, -1]).argmax())
        if t in eos:
            break
        out.append(t)
        total += 1
        hidden, past = lm(lm.embed_tokens(torch.tensor([[t]])), torch.ones(1, total, dtype=torch.long),
                          torch.full((3, 1, 1), nxt), past)
        nxt += 1
    return tok.decode(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt", nargs="?", default="/tmp/tiny-glm.pt")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--every", type=int, default=1, help="every k-th question only")
    ap.add_argument("--out")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-thinking", action="store_true", help="prompts rendered with enable_thinking=false")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = torch.load(args.ckpt)
    c = Config(**ckpt["config"])
    model = GlmOcrModel(c)
    model.load_state_dict(ckpt["state"])
    model.eval()
    tok = Tokenizer.load(MODEL_DIR)
    rows = [json.loads(l) for l in open(os.path.join(MODEL_DIR, "heldout/questions.jsonl"), encoding="utf-8")]
    rows = rows[::args.every][:args.limit]
    stats = defaultdict(lambda: [0, 0])
    results, cache = [], {}
    t0 = time.time()
    for n, r in enumerate(rows):
        if r["image"] not in cache:
            pv, grid = to_patches(Image.open(os.path.join(MODEL_DIR, "heldout", r["image"])))
            cache = {r["image"]: (model.visual(torch.from_numpy(pv)[None], grid[1], grid[2]), grid)}
        feats, grid = cache[r["image"]]
        text = answer(model, tok, c, feats, grid, r["question"], thinking=not args.no_thinking)
        ok = text == r["answer"]
        for key in (f"{r['kind']} {r['lang']}", r["kind"], "all"):
            stats[key][0] += ok
            stats[key][1] += 1
        results.append({**r, "output": text, "ok": ok})
        if not ok and sum(1 for x in results if not x["ok"]) <= 15:
            print("BAD", r["image"], r["kind"], repr(r["question"]), "->", repr(text), "want", repr(r["answer"]), flush=True)
    for k in sorted(stats):
        a, b = stats[k]
        print(f"{k:16s} {a / b:.3f} {a}/{b}")
    print(f"{len(rows)} questions in {time.time() - t0:.1f} s")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for r in results:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
