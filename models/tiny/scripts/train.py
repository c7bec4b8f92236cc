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
from synth import BACKGROUNDS, COLORS, SHAPES, make_sample, shape_map
from tokenizer import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_DIR = os.path.dirname(HERE)
EVAL_SEED_BASE = 10_000_000
VOCAB_SIZE = 640
SHAPE_IDS = {s: i + 1 for i, s in enumerate(SHAPES)}
COLOR_IDS = {k: i + 1 for i, k in enumerate(COLORS)}
BG_IDS = {k: i for i, k in enumerate(BACKGROUNDS)}
AUX_WEIGHT = 0.5


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


def cell_labels(c, scene):
    """Per image token (the connector's grid of cells, row-major): the shape and the colour that
    cover most of that cell, 0 where shapes cover under a tenth of it. Targets of the vision
    tower's auxiliary loss: every cell a shape touches names it, edges and corners included,
    which is where one shape differs from another."""
    side = int(c.image_seq_len ** 0.5)
    cell = c.image_size // side
    owners = shape_map(scene)
    shape = torch.zeros(c.image_seq_len, dtype=torch.long)
    color = torch.zeros(c.image_seq_len, dtype=torch.long)
    for r in range(side):
        for col in range(side):
            counts = np.bincount(owners[r * cell:(r + 1) * cell, col * cell:(col + 1) * cell].ravel(), minlength=4)
            counts[0] = 0
            k = int(counts.argmax())
            if counts[k] >= cell * cell // 10:
                p = scene["shapes"][k - 1]
                shape[r * side + col] = SHAPE_IDS[p["shape"]]
                color[r * side + col] = COLOR_IDS[p["color"]]
    return shape, color


def batch(tok, c, seeds):
    images, seqs, shapes, colors, backgrounds = [], [], [], [], []
    for s in seeds:
        rng = random.Random(s ^ 0x5EED)
        img, scene, qas = make_sample(s, n_questions=rng.choice([1, 2, 3]))
        images.append(to_pixels(img))
        seqs.append(encode_conversation(tok, c, [(q, a) for q, a, _, _ in qas]))
        shape, color = cell_labels(c, scene)
        shapes.append(shape)
        colors.append(color)
        backgrounds.append(BG_IDS[scene["background"]])
    n = max(len(i) for i, _ in seqs)
    ids = torch.zeros(len(seeds), n, dtype=torch.long)
    att = torch.zeros(len(seeds), n, dtype=torch.long)
    lab = torch.full((len(seeds), n), -100, dtype=torch.long)
    for r, (i, m) in enumerate(seqs):
        ids[r, : len(i)] = torch.tensor(i)
        att[r, : len(i)] = 1
        t = torch.tensor(i)
        lab[r, : len(i) - 1] = torch.where(torch.tensor(m[1:]) == 1, t[1:], torch.tensor(-100))
    return torch.stack(images), ids, att, lab, torch.stack(shapes), torch.stack(colors), torch.tensor(backgrounds)


N_CELL = 1 + len(SHAPE_IDS) + 1 + len(COLOR_IDS)


def aux_loss_of(aux, features, shape_lab, color_lab, bg_lab):
    """Per cell: which shape and colour cover it; per image: the kind of background."""
    a = aux(features)
    n_shape = 1 + len(SHAPE_IDS)
    return (F.cross_entropy(a[..., :n_shape].reshape(-1, n_shape), shape_lab.reshape(-1))
            + F.cross_entropy(a[..., n_shape:N_CELL].reshape(-1, N_CELL - n_shape), color_lab.reshape(-1))
            + F.cross_entropy(aux(features.mean(1))[:, N_CELL:], bg_lab))


def pretrain_vision(model, aux, c, args):
    """Phase 1: the vision tower and connector alone, on the auxiliary task. Real VLMs start from
    a pretrained vision encoder; this is ours, and it costs a fraction of a full step per image."""
    params = list(model.vision.parameters()) + list(aux.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.05)
    start = time.time()
    first = args.first_seed + 50_000_000
    for step in range(args.vision_steps):
        lr = args.lr * min(1.0, (step + 1) / 50) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.vision_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        images, shapes, colors, backgrounds = [], [], [], []
        for s in range(first + step * args.vision_batch, first + (step + 1) * args.vision_batch):
            img, scene, _ = make_sample(s, n_questions=0)
            images.append(to_pixels(img))
            shape, color = cell_labels(c, scene)
            shapes.append(shape)
            colors.append(color)
            backgrounds.append(BG_IDS[scene["background"]])
        shape_lab, color_lab = torch.stack(shapes), torch.stack(colors)
        features = model.vision(torch.stack(images))
        loss = aux_loss_of(aux, features, shape_lab, color_lab, torch.tensor(backgrounds))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0 or step == args.vision_steps - 1:
            covered = shape_lab > 0
            shape_acc = (aux(features)[..., : 1 + len(SHAPE_IDS)].argmax(-1)[covered] == shape_lab[covered]).float().mean()
            print(f"vision step {step} aux {loss.item():.4f} shape accuracy {shape_acc:.2f} lr {lr:.5f} "
                  f"{(time.time() - start) / 60:.1f} min", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="/tmp/tiny.pt")
    ap.add_argument("--vision-steps", type=int, default=0, help="steps of vision pretraining before the full model")
    ap.add_argument("--vision-batch", type=int, default=64)
    ap.add_argument("--init", help="checkpoint to start from (continues training with a new schedule)")
    ap.add_argument("--first-seed", type=int, default=0, help="training seeds start here (use a fresh range with --init)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tok = build_tokenizer()
    c = Config(vocab_size=len(tok.vocab))
    tok.save(MODEL_DIR, model_max_length=c.max_positions)
    assert Tokenizer.load(MODEL_DIR).encode("<|im_start|>User: 红色。") == tok.encode("<|im_start|>User: 红色。")
    image_token_id = tok.token_id("<image>")
    model = VisionLanguageModel(c)
    # Real VLMs start from a pretrained vision tower; this one learns from scratch, and without a
    # direct signal the decoder learns the answers' priors and ignores the image. The auxiliary
    # heads (training only, not exported) ask each image token what sits in its cell.
    aux = torch.nn.Linear(c.dim, N_CELL + len(BACKGROUNDS))
    if args.init:
        ckpt = torch.load(args.init)
        # Weights whose shapes still match (all of them, or the text decoder after a change to the vision tower).
        own = model.state_dict()
        kept = {k: v for k, v in ckpt["state"].items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(kept, strict=False)
        if "aux" in ckpt:
            with torch.no_grad():
                for name, t in aux.named_parameters():
                    old = ckpt["aux"][name]
                    t[: old.shape[0]] = old
        print(f"initialised {len(kept)} of {len(own)} tensors from {args.init}", flush=True)
    print(f"vocab {len(tok.vocab)}, params {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M", flush=True)

    params = list(model.parameters()) + list(aux.parameters())
    if args.vision_steps:
        pretrain_vision(model, aux, c, args)
        torch.save({"config": c.to_dict(), "state": model.state_dict(), "aux": aux.state_dict()}, args.out + ".vision")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    start = time.time()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        seeds = range(args.first_seed + step * args.batch, args.first_seed + (step + 1) * args.batch)
        images, ids, att, lab, shape_lab, color_lab, bg_lab = batch(tok, c, seeds)
        logits, features = model(images, ids, att, image_token_id)
        text_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab.reshape(-1))
        aux_loss = aux_loss_of(aux, features, shape_lab, color_lab, bg_lab)
        loss = text_loss + AUX_WEIGHT * aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == args.steps - 1:
            el = time.time() - start
            print(f"step {step} loss {text_loss.item():.4f} aux {aux_loss.item():.4f} lr {lr:.5f} {el / 60:.1f} min", flush=True)
        if step % 200 == 0 or step == args.steps - 1:
            torch.save({"config": c.to_dict(), "state": model.state_dict(), "aux": aux.state_dict()}, args.out)
    print(f"trained {args.steps} steps in {(time.time() - start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
