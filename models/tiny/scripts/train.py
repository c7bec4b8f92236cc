"""Trains the tiny model on synthetic samples drawn fresh for every step.

    /usr/bin/python3 models/tiny/scripts/train.py --out /tmp/tiny.pt   # --vision-steps 1500 --steps 4000

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
from synth import BACKGROUNDS, COLORS, KINDS, POSITIONS, SHAPES, make_sample, position_of, shape_map
from tokenizer import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_DIR = os.environ.get("TINY_MODEL_DIR", os.path.dirname(HERE))
EVAL_SEED_BASE = 10_000_000
# Large enough that every word a short answer decides between is one token, as in a real
# vocabulary (checked in build_tokenizer). At 640, " left" was four tokens and " right" five,
# both starting with the same bare space, and 左 three single bytes: the answer was decided over
# several tokens, partly on tokens that every other answer uses too.
VOCAB_SIZE = 800
SHAPE_IDS = {s: i + 1 for i, s in enumerate(SHAPES)}
COLOR_IDS = {k: i + 1 for i, k in enumerate(COLORS)}
BG_IDS = {k: i for i, k in enumerate(BACKGROUNDS)}
POSITION_IDS = {k: i + 1 for i, k in enumerate(POSITIONS)}
# Position questions three times as often as the others, colour twice: the decoder learns to find
# a named shape's cells (colour) and, slowest of all, to read where they are (position).
TRAIN_KINDS = KINDS + ["position", "position", "color"]


def image_prompt(c):
    """What Idefics3's processor expands one `<image>` into when the image is not split."""
    return "<fake_token_around_image><global-img>" + "<image>" * c.image_seq_len + "<fake_token_around_image>"


def encode_conversation(tok, c, turns):
    """Token ids and per-token loss weights for a chat in the model's template, and where each
    answer's tokens start and end. Each answer's tokens share a weight of 1, so that a one-word
    answer ("On the left.") counts as much as a JSON listing; with a plain mean over tokens, the
    long listings drowned out the short answers whose single deciding token is the hard part."""
    ids, weights, spans = [], [], []

    def add(text, learn):
        t = tok.encode(text)
        ids.extend(t)
        weights.extend([1.0 / len(t) if learn else 0.0] * len(t))

    for i, (q, a) in enumerate(turns):
        user = "<|im_start|>User:" + image_prompt(c) + q if i == 0 else "User: " + q
        add(user + "<end_of_utterance>\nAssistant:", False)
        start = len(ids)
        add(" " + a + "<end_of_utterance>", True)
        spans.append((start, len(ids)))
        add("\n", False)
    return ids, weights, spans


def to_pixels(img):
    """The processor's rescale and normalise: [0, 255] to [-1, 1], channels first."""
    return torch.from_numpy((np.asarray(img, dtype=np.float32) / 255.0 - 0.5) / 0.5).permute(2, 0, 1)


def build_tokenizer():
    texts = []
    for seed in range(4000):
        _, _, qas = make_sample(EVAL_SEED_BASE * 2 + seed, n_questions=3)
        texts += [q for q, *_ in qas] + [" " + a for _, a, *_ in qas]
    texts += ["User: Assistant: System: \n"] * 50
    tok = Tokenizer.train(texts, VOCAB_SIZE)
    # The word each short answer turns on (after "Assistant:", "A" or "On the").
    words = [" " + c.capitalize() for c in COLORS] + [" " + s for s in SHAPES] + [" " + p for p in POSITIONS]
    words += [" " + zh for _, zh in COLORS.values()] + [" " + zh for zh in SHAPES.values()]
    words += [" 在" + zh for zh in POSITIONS.values()]
    split = [w for w in words if len(tok.encode(w)) > 1]
    assert not split, f"answer words split into several tokens: {split}"
    return tok


# What the auxiliary head reads from every image token: (name, number of classes, weight in the
# loss). Class 0 is "no shape here" for the per-shape targets; count and background describe the
# whole image. The shape weighs twice: a cell sees only part of a shape, so it is the slowest
# target to learn, and questions that name a shape look its cells up by it.
CELL_TARGETS = [("shape", 1 + len(SHAPE_IDS), 2.0), ("color", 1 + len(COLOR_IDS), 1.0),
                ("position", 1 + len(POSITION_IDS), 1.0), ("rank", 4, 1.0), ("count", 3, 1.0),
                ("background", len(BG_IDS), 1.0)]
N_AUX = sum(n for _, n, _ in CELL_TARGETS)
# The decoder head that lookup_loss teaches to look at the shape a question is about: in the third
# of four layers, so that the two before can bring the shape's name from the question forward.
LOOKUP_LAYER, LOOKUP_HEAD = 2, 0


def cell_labels(c, scene):
    """Per image token (the connector's grid of cells, row-major), the targets of the auxiliary
    loss [image_seq_len, len(CELL_TARGETS)]. A cell belongs to the shape covering most of it
    (at least a tenth); it names that shape, its colour, its answer to "where is it" (ignored
    where that is ambiguous) and its place in left-to-right order. Every cell also names the
    number of shapes and the background. These are the facts the answers are made of, so the
    decoder only has to find and copy them."""
    side = int(c.image_seq_len ** 0.5)
    cell = c.image_size // side
    owners = shape_map(scene)
    shapes = scene["shapes"]
    labels = torch.zeros(c.image_seq_len, len(CELL_TARGETS), dtype=torch.long)
    labels[:, 4] = len(shapes) - 1
    labels[:, 5] = BG_IDS[scene["background"]]
    for r in range(side):
        for col in range(side):
            counts = np.bincount(owners[r * cell:(r + 1) * cell, col * cell:(col + 1) * cell].ravel(), minlength=4)
            counts[0] = 0
            k = int(counts.argmax())
            if counts[k] >= cell * cell // 10:
                p = shapes[k - 1]
                where = position_of(p["x"], p["y"])
                labels[r * side + col, :4] = torch.tensor(
                    [SHAPE_IDS[p["shape"]], COLOR_IDS[p["color"]], POSITION_IDS[where] if where else -100, k])
    return labels


def batch(tok, c, seeds):
    """Images, token ids, attention mask, next-token labels and loss weights for one step, and
    `look` [B, S, S]: for every token that predicts part of an answer about one shape, the image
    tokens of that shape's cells (see lookup_loss)."""
    images, seqs, looks = [], [], []
    image_token_id = tok.token_id("<image>")
    for s in seeds:
        rng = random.Random(s ^ 0x5EED)
        img, scene, qas = make_sample(s, kinds=TRAIN_KINDS, n_questions=rng.choice([1, 2, 3]))
        images.append(to_pixels(img))
        i, w, spans = encode_conversation(tok, c, [(q, a) for q, a, *_ in qas])
        seqs.append((i, w))
        owners = cell_labels(c, scene)[:, 3]
        slots = torch.tensor(i) == image_token_id
        turns = []
        for (*_, about), (start, end) in zip(qas, spans):
            if about is not None:
                keys = torch.zeros(len(i))
                keys[slots] = (owners == about + 1).float()
                turns.append((start - 1, end - 1, keys))
        looks.append(turns)
    n = max(len(i) for i, _ in seqs)
    ids = torch.zeros(len(seeds), n, dtype=torch.long)
    att = torch.zeros(len(seeds), n, dtype=torch.long)
    lab = torch.zeros((len(seeds), n), dtype=torch.long)
    weight = torch.zeros((len(seeds), n))
    look = torch.zeros((len(seeds), n, n))
    for r, (i, w) in enumerate(seqs):
        ids[r, : len(i)] = torch.tensor(i)
        att[r, : len(i)] = 1
        lab[r, : len(i) - 1] = torch.tensor(i[1:])
        weight[r, : len(i) - 1] = torch.tensor(w[1:])
        for first, last, keys in looks[r]:
            look[r, first:last, : len(i)] = keys
    return torch.stack(images), ids, att, lab, weight, look


def lookup_loss(attention, look, total):
    """How far one attention head is from looking at the shape an answer is about: minus the log
    of the attention it gives that shape's image tokens, for every token that predicts part of
    such an answer, summed and divided by `total`. Colour answers found their shape by step 2000
    without help, while position answers kept reading another shape's position (18 of 21 wrong
    answers); this says where to look, for both, and for shape questions that name a colour."""
    asks = look.sum(-1) > 0
    mass = (attention * look).sum(-1)[asks]
    return -torch.log(mass + 1e-6).sum() / total


def aux_losses(aux, features, cells):
    """Cross-entropy of every cell target, and the accuracy of each on the cells it applies to."""
    logits = aux(features)
    losses, accuracy, at = [], {}, 0
    for j, (name, n, weight) in enumerate(CELL_TARGETS):
        lab = cells[..., j]
        part = logits[..., at:at + n]
        at += n
        losses.append(weight * F.cross_entropy(part.reshape(-1, n), lab.reshape(-1), ignore_index=-100))
        scored = lab > 0 if j < 4 else lab >= 0
        accuracy[name] = (part.argmax(-1)[scored] == lab[scored]).float().mean().item()
    # The background once more from the mean of the image's tokens: a property of the whole image,
    # which single cells, mostly covered by shapes or flat, showed poorly (0.76 per cell).
    at = N_AUX - len(BG_IDS)
    pooled = aux(features.mean(1))[:, at:]
    bg = cells[:, 0, 5]
    losses.append(F.cross_entropy(pooled, bg))
    accuracy["background (image)"] = (pooled.argmax(-1) == bg).float().mean().item()
    return sum(losses), accuracy


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
        images, cells = [], []
        for s in range(first + step * args.vision_batch, first + (step + 1) * args.vision_batch):
            img, scene, _ = make_sample(s, n_questions=0)
            images.append(to_pixels(img))
            cells.append(cell_labels(c, scene))
        loss, accuracy = aux_losses(aux, model.vision(torch.stack(images)), torch.stack(cells))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0 or step == args.vision_steps - 1:
            shown = " ".join(f"{k} {v:.2f}" for k, v in accuracy.items())
            print(f"vision step {step} aux {loss.item():.4f} accuracy: {shown} lr {lr:.5f} "
                  f"{(time.time() - start) / 60:.1f} min", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vision-steps", type=int, default=1500, help="steps of vision pretraining")
    ap.add_argument("--vision-batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4000, help="steps of decoder training (vision tower frozen up to the connector)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--micro-batch", type=int, default=8, help="conversations of similar length run together")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--lookup-weight", type=float, default=0.1, help="weight of lookup_loss (0 turns it off)")
    # Measured on the 2-core machine: the vision tower's convolutions gain from two threads, while
    # the decoder's small matrices run twice as fast on one (two threads contend).
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for vision pretraining")
    ap.add_argument("--decoder-threads", type=int, default=1, help="threads for decoder training")
    ap.add_argument("--out", default="/tmp/tiny.pt")
    ap.add_argument("--init", help="checkpoint to start from, such as OUT.vision; with --vision-steps 0 phase 2 alone runs")
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
    # Real VLMs start from a pretrained vision tower; this one learns from scratch, on an
    # auxiliary head (training only, not exported) that asks each image token what is in its cell.
    aux = torch.nn.Linear(c.dim, N_AUX)
    if args.init:
        ckpt = torch.load(args.init)
        model.load_state_dict(ckpt["state"])
        aux.load_state_dict(ckpt["aux"])
        print(f"initialised from {args.init}", flush=True)
    print(f"vocab {len(tok.vocab)}, params {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M", flush=True)

    def save(path=args.out):
        torch.save({"config": c.to_dict(), "state": model.state_dict(), "aux": aux.state_dict()}, path)

    start = time.time()
    if args.vision_steps:
        pretrain_vision(model, aux, c, args)
        # Phase 1 is deterministic; from this file, --vision-steps 0 repeats phase 2 alone.
        save(args.out + ".vision")
    # Phase 2: the decoder learns to read the image features. The vision tower is frozen up to the
    # connector, which skips the larger part of its backward pass; the connector and the cell
    # positions train with the decoder, as LLaVA and Idefics train their projector, so that it
    # can bring forward what its answers need (the cell positions, for "where is it").
    vision = model.vision
    vision.eval()
    vision.requires_grad_(False)
    vision.connector.requires_grad_(True)
    vision.cell_pos.requires_grad_(True)
    model.text.layers[LOOKUP_LAYER].keep_attention = bool(args.lookup_weight)
    torch.set_num_threads(args.decoder_threads)
    params = list(model.text.parameters()) + [vision.connector.weight, vision.cell_pos]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        seeds = range(args.first_seed + step * args.batch, args.first_seed + (step + 1) * args.batch)
        images, ids, att, lab, weight, look = batch(tok, c, seeds)
        asked = int((look.sum(-1) > 0).sum())
        with torch.no_grad():
            shuffled = vision.tokens(images)
        opt.zero_grad(set_to_none=True)
        loss, lookup = 0.0, 0.0
        # The batch in groups of similar length, each cut to its own longest: 41% of a batch padded
        # to its longest conversation is padding. Same gradient as the whole batch at once.
        for rows in att.sum(1).argsort().split(args.micro_batch):
            n = int(att[rows].sum(1).max())
            features = vision.project(shuffled[rows])
            logits = model(features, ids[rows, :n], att[rows, :n], image_token_id)
            per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab[rows, :n].reshape(-1), reduction="none")
            part = (per_token * weight[rows, :n].reshape(-1)).sum() / weight.sum()
            loss += part.item()
            if args.lookup_weight and asked:
                attention = model.text.layers[LOOKUP_LAYER].attention[:, LOOKUP_HEAD]
                looked = lookup_loss(attention, look[rows, :n, :n], asked)
                lookup += looked.item()
                part = part + args.lookup_weight * looked
            part.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 25 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss:.4f} lookup {lookup:.4f} lr {lr:.5f} {(time.time() - start) / 60:.1f} min", flush=True)
        if step % 200 == 0 or step == args.steps - 1:
            save()
    print(f"trained in {(time.time() - start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
