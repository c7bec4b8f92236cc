"""Trains the tiny model on synthetic samples drawn fresh for every step.

    /usr/bin/python3 models/tiny/scripts/train.py --steps 1500 --out /tmp/tiny.pt

Training seeds start at 0 and count up; the held-out set (make_eval_set.py) uses seeds from
EVAL_SEED_BASE on, which training never reaches. Writes tokenizer.json and
tokenizer_config.json into the model folder first, since the token ids depend on them.
"""

import argparse
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from model import Config, VisionLanguageModel
from synth import KINDS, make_sample
from tokenizer import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_DIR = os.path.dirname(HERE)
EVAL_SEED_BASE = 10_000_000
VOCAB_SIZE = 640


def image_prompt(c):
    """What Idefics3's processor expands one `<image>` into when the image is not split."""
    return "<fake_token_around_image><global-img>" + "<image>" * c.image_seq_len + "<fake_token_around_image>"


def encode_conversation(tok, c, turns):
    """Token ids and a loss mask (1 on answer tokens) for a chat in the model's template."""
    ids, mask = [], []

    def add(text, learn):
        t = tok.encode(text)
        ids.extend(t)
        mask.extend([learn] * len(t))

    for i, (q, a) in enumerate(turns):
        user = "<|im_start|>User:" + image_prompt(c) + q if i == 0 else "User: " + q
        add(user + "<end_of_utterance>\nAssistant:", 0)
        add(" " + a + "<end_of_utterance>", 1)
        add("\n", 0)
    return ids, mask


def to_pixels(img):
    """The processor's rescale and normalise: [0, 255] to [-1, 1], channels first."""
    return torch.from_numpy((np.asarray(img, dtype=np.float32) / 255.0 - 0.5) / 0.5).permute(2, 0, 1)


def build_tokenizer():
    texts = []
    for seed in range(4000):
        _, _, qas = make_sample(EVAL_SEED_BASE * 2 + seed, n_questions=3)
        texts += [q for q, _, _, _ in qas] + [" " + a for _, a, _, _ in qas]
    texts += ["User: Assistant: System: \n"] * 50
    return Tokenizer.train(texts, VOCAB_SIZE)


def batch(tok, c, seeds):
    images, seqs = [], []
    for s in seeds:
        rng = random.Random(s ^ 0x5EED)
        img, _, qas = make_sample(s, n_questions=rng.choice([1, 2, 3]))
        images.append(to_pixels(img))
        seqs.append(encode_conversation(tok, c, [(q, a) for q, a, _, _ in qas]))
    n = max(len(i) for i, _ in seqs)
    ids = torch.zeros(len(seeds), n, dtype=torch.long)
    att = torch.zeros(len(seeds), n, dtype=torch.long)
    lab = torch.full((len(seeds), n), -100, dtype=torch.long)
    for r, (i, m) in enumerate(seqs):
        ids[r, : len(i)] = torch.tensor(i)
        att[r, : len(i)] = 1
        t = torch.tensor(i)
        lab[r, : len(i) - 1] = torch.where(torch.tensor(m[1:]) == 1, t[1:], torch.tensor(-100))
    return torch.stack(images), ids, att, lab


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="/tmp/tiny.pt")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tok = build_tokenizer()
    c = Config(vocab_size=len(tok.vocab))
    tok.save(MODEL_DIR, model_max_length=c.max_positions)
    assert Tokenizer.load(MODEL_DIR).encode("<|im_start|>User: 红色。") == tok.encode("<|im_start|>User: 红色。")
    image_token_id = tok.token_id("<image>")
    model = VisionLanguageModel(c)
    print(f"vocab {len(tok.vocab)}, params {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    start = time.time()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        seeds = range(step * args.batch, (step + 1) * args.batch)
        images, ids, att, lab = batch(tok, c, seeds)
        logits = model(images, ids, att, image_token_id)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == args.steps - 1:
            el = time.time() - start
            print(f"step {step} loss {loss.item():.4f} lr {lr:.5f} {el / 60:.1f} min", flush=True)
        if step % 200 == 0 or step == args.steps - 1:
            torch.save({"config": c.to_dict(), "state": model.state_dict()}, args.out)
    print(f"trained {args.steps} steps in {(time.time() - start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
