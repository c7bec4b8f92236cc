"""Trains the tiny GLM-OCR model on synthetic receipts drawn fresh for every step.

    /usr/bin/python3 models/tiny-glm/scripts/train.py --out /tmp/tiny-glm.pt

Two phases, one command (see README, "How it was trained"):
1. vision pretraining (--vision-minutes 15): the vision tower learns, through linear heads that are
   not exported, what every 8x8 patch token and every 16x16 cell (image token) holds: its
   characters left to right, its line, its field;
2. decoder training (--minutes 43) on the chat-template prompts, with the last vision block, the
   downsample and the merger (the rest of the vision tower frozen).

Training seeds start at 0 and count up; the held-out set (make_eval_set.py) uses seeds from
EVAL_SEED_BASE on, which training never reaches. Writes tokenizer.json and tokenizer_config.json
into the model folder first, since the token ids depend on them.
"""

import argparse
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from model import Config, GlmOcrModel, get_rope_index
from processor import to_patches
from synth import KEYS, KINDS, LABELS, make_sample
from tokenizer import Tokenizer, render_prompt

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_DIR = os.environ.get("TINY_GLM_DIR", os.path.dirname(HERE))
EVAL_SEED_BASE = 10_000_000
TOKENIZER_SEED_BASE = 20_000_000
VISION_SEED_BASE = 50_000_000
VOCAB_SIZE = 640  # an upper bound: merges stop once no pair occurs twice (562 tokens)

# Every character the generator prints, as classes 1.. of the per-cell targets (0 = empty slot).
CHARSET = sorted(set("0123456789¥-") | {ch for zh, en in LABELS.values() for ch in zh + en if ch != " "})
CHAR_IDS = {ch: i + 1 for i, ch in enumerate(CHARSET)}
SLOTS = 4  # at most four character centres fall in one 16x16 cell (3000 images: 4 in 0.5%)
# Per-cell targets: SLOTS characters, the line (0 = none, 1..5) and its field (0 = none, 1..6).
TARGETS = [(f"char{k}", 1 + len(CHARSET)) for k in range(SLOTS)] + [("line", 6), ("field", 1 + len(KEYS))]
N_AUX = sum(n for _, n in TARGETS)
# Per 8x8 patch (the blocks' tokens, before the merge): the characters whose centres fall in it,
# left to right, and for a patch with a character its line and field. The glyphs are learned here:
# with only the cell targets (or with both through the blocks) they were learned 5x slower.
PATCH_SLOTS = 2
PATCH_TARGETS = [(f"char{k}", 1 + len(CHARSET)) for k in range(PATCH_SLOTS)] + [("line", 6), ("field", 1 + len(KEYS))]
N_PATCH_AUX = sum(n for _, n in PATCH_TARGETS)
INK_WEIGHT = 4.0  # patches with a character weigh this much more than empty ones (most are empty)
# The decoder heads that lookup_loss teaches where to look: (layer, head) -> which cells.
LOOK_NEXT = (2, 0)  # the cells holding the characters of the token being predicted
LOOK_HERE = (1, 0)  # the cells holding the characters of the current (input) token
# Question kinds as trained: all four per image where the image allows (current needs two prices).
TRAIN_KINDS = KINDS


def build_tokenizer():
    texts = []
    for seed in range(TOKENIZER_SEED_BASE, TOKENIZER_SEED_BASE + 3000):
        _, _, _, qas = make_sample(seed, n_questions=4)
        texts += [render_prompt(q) + a + "<|endoftext|>" for q, a, *_ in qas]
    tok = Tokenizer.train(texts, VOCAB_SIZE)
    # Every printed label is one token (as line starts and after "\n"), every digit too.
    words = [zh for zh, _ in LABELS.values()] + [en.split()[0] for _, en in LABELS.values()]
    split = [w for w in words if len(tok.encode(w)) > 1]
    assert not split, f"labels split into several tokens: {split}"
    assert all(len(tok.encode(d)) == 1 for d in "0123456789")
    return tok


def cell_of(c, x, y):
    side_w = c.image_width // (c.patch_size * c.merge_size)
    cell = c.patch_size * c.merge_size
    return int(y // cell) * side_w + int(x // cell)


def cell_labels(c, scene, chars):
    """[image_seq_len, len(TARGETS)]: for every image token (merged cell, row-major), the
    characters whose centres fall in it, left to right, then its line and that line's field."""
    labels = torch.zeros(c.image_seq_len, len(TARGETS), dtype=torch.long)
    per_cell = {}
    for li, ci, ch, x, y in chars:
        per_cell.setdefault(cell_of(c, x, y), []).append((x, ch, li))
    for cell, items in per_cell.items():
        items.sort()
        for k, (_, ch, _) in enumerate(items[:SLOTS]):
            labels[cell, k] = CHAR_IDS[ch]
        li = items[0][2]
        labels[cell, SLOTS] = li + 1
        labels[cell, SLOTS + 1] = KEYS.index(scene["fields"][li][0]) + 1
    return labels


def patch_labels(c, scene, chars):
    """[N, len(PATCH_TARGETS)] in merge-window order (the blocks' token order)."""
    gh, gw = c.grid
    m, p = c.merge_size, c.patch_size
    labels = torch.zeros(gh * gw, len(PATCH_TARGETS), dtype=torch.long)
    per = {}
    for li, ci, ch, x, y in chars:
        r, col = int(y // p), int(x // p)
        idx = ((r // m) * (gw // m) + col // m) * m * m + (r % m) * m + col % m
        per.setdefault(idx, []).append((x, ch, li))
    for idx, items in per.items():
        items.sort()
        for k, (_, ch, _) in enumerate(items[:PATCH_SLOTS]):
            labels[idx, k] = CHAR_IDS[ch]
        li = items[0][2]
        labels[idx, PATCH_SLOTS] = li + 1
        labels[idx, PATCH_SLOTS + 1] = KEYS.index(scene["fields"][li][0]) + 1
    return labels


def patch_losses(head, x, labels):
    logits = head(x)
    ink = labels[..., 0] > 0
    w = torch.where(ink, INK_WEIGHT, 1.0).reshape(-1)
    losses, acc, at = [], {}, 0
    for j, (name, n) in enumerate(PATCH_TARGETS):
        part, lab = logits[..., at:at + n], labels[..., j]
        at += n
        ce = F.cross_entropy(part.reshape(-1, n), lab.reshape(-1), reduction="none")
        if j < PATCH_SLOTS:
            losses.append((ce * w).sum() / w.sum())
        else:  # line and field only where there is ink
            losses.append((ce * ink.reshape(-1)).sum() / ink.sum().clamp(min=1))
        sc = lab > 0
        acc["p" + name] = (part.argmax(-1)[sc] == lab[sc]).float().mean().item() if sc.any() else 1.0
    return sum(losses), acc


def aux_losses(aux, features, cells):
    logits = aux(features)
    losses, accuracy, at = [], {}, 0
    for j, (name, n) in enumerate(TARGETS):
        lab, part = cells[..., j], logits[..., at:at + n]
        at += n
        losses.append(F.cross_entropy(part.reshape(-1, n), lab.reshape(-1)))
        scored = lab > 0
        accuracy[name] = (part.argmax(-1)[scored] == lab[scored]).float().mean().item() if scored.any() else 1.0
    # Whole-cell accuracy: every slot right (empty ones included).
    pred = torch.stack([logits[..., sum(n for _, n in TARGETS[:j]):sum(n for _, n in TARGETS[:j + 1])].argmax(-1)
                        for j in range(SLOTS)], -1)
    accuracy["cell"] = (pred == cells[..., :SLOTS]).all(-1).float().mean().item()
    return sum(losses), accuracy


def answer_sources(scene, kind, key, answer):
    """For every character of the answer, the printed (line, index) it copies, or None."""
    fields = scene["fields"]
    zh = scene["lang"] == "zh"
    labels = [LABELS[k][0 if zh else 1] for k, _ in fields]
    if kind == "transcribe":
        src = []
        for li, text in enumerate(answer.split("\n")):
            src += [(li, ci) if ch != " " else None for ci, ch in enumerate(text)] + [(li + 1, 0)]  # "\n": the next line
        return src[:-1]
    if kind in ("field", "current"):
        li = [k for k, _ in fields].index(key)
        start = len(labels[li]) + 1
        return [(li, start + i) for i in range(len(answer))]
    # json: a key looks at its line's label, the value (and the space before it) at the value.
    src = [None] * len(answer)
    for li, (k, v) in enumerate(fields):
        at = answer.index(f'"{k}"')
        for i in range(len(k)):
            src[at + 1 + i] = (li, 0)
        vt = str(v)
        at = answer.index(vt, at + len(k) + 3)
        start = len(labels[li]) + 1 + (0 if k == "date" else 1)
        src[at - 1 - (k == "date")] = (li, start)
        for i in range(len(vt)):
            src[at + i] = (li, start + i)
    return src


def encode_row(tok, c, grid, question, answer, thinking, sources, char_cells):
    """ids, loss weights, and per token the cells of the printed characters it copies."""
    prompt = render_prompt(question, thinking).replace("<|image|>", "<|image|>" * c.image_seq_len)
    p_ids = tok.encode(prompt)
    a_ids = tok.encode(answer) + [tok.token_id("<|endoftext|>")]
    ids = p_ids + a_ids
    assert tok.encode(prompt + answer) == ids[:-1]
    n = len(a_ids)
    weights = [0.0] * len(p_ids) + [1.0 / math.sqrt(n)] * n
    # Character index of every byte of the answer; a token covers the characters of its bytes.
    byte_char = [ci for ci, ch in enumerate(answer) for _ in ch.encode("utf-8")]
    cells, at = [None] * len(ids), 0
    for j, t in enumerate(a_ids[:-1]):
        k = len(tok.inverse[t])  # byte-level tokens: one unicode symbol per byte
        chars = sorted({byte_char[b] for b in range(at, at + k)})
        got = {char_cells[sources[ch]] for ch in chars if sources[ch] is not None and sources[ch] in char_cells}
        cells[len(p_ids) + j] = sorted(got) or None
        at += k
    assert at == len(byte_char)
    return ids, weights, cells


def build_batch(tok, c, seeds, q_per_image, thinking_off):
    """pixel_values [I, N, 384] and rows (ids, weights, cells, image index) for one step."""
    pvs, rows = [], []
    for img_i, s in enumerate(seeds):
        img, scene, chars, qas = make_sample(s, n_questions=q_per_image, kinds=TRAIN_KINDS)
        pv, grid = to_patches(img)
        pvs.append(torch.from_numpy(pv))
        char_cells = {(li, ci): cell_of(c, x, y) for li, ci, _, x, y in chars}
        rng = random.Random(s ^ 0x5EED)
        for q, a, kind, key in qas:
            src = answer_sources(scene, kind, key, a)
            ids, w, cells = encode_row(tok, c, grid, q, a, rng.random() >= thinking_off, src, char_cells)
            rows.append((ids, w, cells, img_i))
    return torch.stack(pvs), rows


def lookup_loss(att, rows_cells, offset, img_pos, start):
    """Minus the log of the attention one head gives the target cells, summed over supervised
    tokens, and their number. att [R, S, P+S] for tokens start.. of each row; rows_cells[r][t]
    lists the target cells of token t (or None); img_pos is where the image tokens start;
    offset 0 supervises the position that predicts token t, -1 token t itself."""
    total, count = 0.0, 0
    for r, cells in enumerate(rows_cells):
        qs, ks = [], []
        for t, cl in enumerate(cells):
            if cl is None:
                continue
            q = (t - 1 if offset == 0 else t) - start
            for cc in cl:
                qs.append(q)
                ks.append(img_pos + cc)
        if not qs:
            continue
        qi, ki = torch.tensor(qs), torch.tensor(ks)
        mass = torch.zeros(att.shape[1]).index_add(0, qi, att[r, qi, ki])
        used = torch.unique(qi)
        total = total + (-torch.log(mass[used] + 1e-6)).sum()
        count += len(used)
    return total, count


def lr_at(base, progress, warmup):
    return base * min(1.0, progress / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def pretrain_vision(model, aux, aux_patch, c, args, log):
    gh, gw = c.grid
    params = list(model.visual.parameters()) + list(aux.parameters()) + list(aux_patch.parameters())
    opt = torch.optim.AdamW(params, lr=args.vision_lr, betas=(0.9, 0.95), weight_decay=0.05)
    start = time.time()
    budget = args.vision_minutes * 60
    step = 0
    while True:
        progress = max(step / args.vision_steps, (time.time() - start) / budget)
        if progress >= 1:
            break
        lr = lr_at(args.vision_lr, progress, 0.03)
        for g in opt.param_groups:
            g["lr"] = lr
        pvs, cells, plabels = [], [], []
        for s in range(VISION_SEED_BASE + step * args.vision_batch, VISION_SEED_BASE + (step + 1) * args.vision_batch):
            img, scene, chars, _ = make_sample(s, n_questions=0)
            pvs.append(torch.from_numpy(to_patches(img)[0]))
            cells.append(cell_labels(c, scene, chars))
            plabels.append(patch_labels(c, scene, chars))
        v = model.visual
        x = v.patch_tokens(torch.stack(pvs), gh, gw)
        loss, acc = patch_losses(aux_patch, x, torch.stack(plabels))
        # The cells learn to pack their four patches from detached tokens: through the blocks,
        # this loss slowed the glyphs down (see PATCH_TARGETS).
        closs, cacc = aux_losses(aux, v.merger(v.downsample_tokens(x.detach())), torch.stack(cells))
        loss = loss + closs
        acc.update(cacc)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 25 == 0:
            shown = " ".join(f"{k} {v:.3f}" for k, v in acc.items())
            log(f"vision step {step} aux {loss.item():.4f} {shown} lr {lr:.5f} {(time.time() - start) / 60:.1f} min")
        step += 1
    log(f"vision: {step} steps in {(time.time() - start) / 60:.1f} min")


def train_decoder(model, tok, c, args, log, save):
    gh, gw = c.grid
    visual = model.visual
    visual.eval()
    visual.requires_grad_(False)
    visual.merger.requires_grad_(True)
    visual.downsample.requires_grad_(True)
    # The last args.tune_blocks vision blocks (and the post norm) train with the decoder, so that
    # the features can adapt to what reading needs; the stem (with its batch norms) stays frozen.
    tuned = list(visual.blocks)[len(visual.blocks) - args.tune_blocks:] if args.tune_blocks else []
    for blk in tuned:
        blk.requires_grad_(True)
    if tuned:
        visual.post_layernorm.requires_grad_(True)
    lm = model.language_model
    lm.layers[LOOK_NEXT[0]].keep_attention = True
    lm.layers[LOOK_HERE[0]].keep_attention = True
    params = (list(lm.parameters()) + list(model.lm_head.parameters()) + list(visual.merger.parameters())
              + list(visual.downsample.parameters()) + [p for blk in tuned for p in blk.parameters()]
              + (list(visual.post_layernorm.parameters()) if tuned else []))
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    image_token_id = tok.token_id("<|image|>")
    img_pos = tok.encode(render_prompt("x")).index(image_token_id)
    # Every prompt starts with the same image prefix: it runs once per image and its keys and
    # values serve all of that image's questions (gradients flow through them).
    prefix = tok.encode(render_prompt("x").split("<|end_of_image|>")[0].replace("<|image|>", "<|image|>" * c.image_seq_len)
                        + "<|end_of_image|>")
    P = len(prefix)
    start = time.time()
    budget = args.minutes * 60
    step = 0
    while True:
        progress = max(step / args.steps, (time.time() - start) / budget)
        if progress >= 1:
            break
        lr = lr_at(args.lr, progress, 0.03)
        for g in opt.param_groups:
            g["lr"] = lr
        seeds = range(args.first_seed + step * args.images, args.first_seed + (step + 1) * args.images)
        pvs, rows = build_batch(tok, c, seeds, args.questions, args.thinking_off)
        with torch.no_grad():
            x = visual.patch_embed(pvs, gh, gw)
            cos, sin = visual.rotary(x.shape[1], gw)
            for blk in list(visual.blocks)[:len(visual.blocks) - len(tuned)]:
                x = blk(x, cos, sin)
        for blk in tuned:
            x = blk(x, cos, sin)
        tokens = visual.post_layernorm(x)
        n_img = len(pvs)
        feats = visual.merger(visual.downsample_tokens(tokens))
        pre_ids = torch.tensor([prefix] * n_img)
        pre_pos = torch.tensor(get_rope_index(prefix, [(1, gh, gw)], image_token_id, c.merge_size)[0])[:, None].expand(3, n_img, P)
        _, present = lm(model.embed(feats, pre_ids, image_token_id), torch.ones(n_img, P, dtype=torch.long), pre_pos)
        wsum = sum(sum(w) for _, w, _, _ in rows)
        opt.zero_grad(set_to_none=True)
        total, loss_v, look_v = 0.0, 0.0, 0.0
        order = sorted(range(len(rows)), key=lambda r: len(rows[r][0]))
        for mb in [order[i:i + args.micro_batch] for i in range(0, len(order), args.micro_batch)]:
            n = max(len(rows[r][0]) for r in mb) - P
            ids = torch.zeros(len(mb), n, dtype=torch.long)
            att = torch.zeros(len(mb), P + n, dtype=torch.long)
            att[:, :P] = 1
            lab = torch.zeros(len(mb), n, dtype=torch.long)
            wt = torch.zeros(len(mb), n)
            pos = torch.zeros(3, len(mb), n, dtype=torch.long)
            for j, r in enumerate(mb):
                i, w, _, _ = rows[r]
                assert i[:P] == prefix
                k = len(i) - P
                ids[j, :k] = torch.tensor(i[P:])
                att[j, P:P + k] = 1
                lab[j, :k - 1] = torch.tensor(i[P + 1:])
                wt[j, :k - 1] = torch.tensor(w[P + 1:])
                pos[:, j, :k] = torch.tensor(get_rope_index(i, [(1, gh, gw)], image_token_id, c.merge_size)[0])[:, P:]
            sel = torch.tensor([rows[r][3] for r in mb])
            past = [(pk[sel], pv[sel]) for pk, pv in present]
            hidden, _ = lm(lm.embed_tokens(ids), att, pos, past)
            logits = model.lm_head(hidden)
            per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab.reshape(-1), reduction="none")
            part = (per_token * wt.reshape(-1)).sum() / wsum
            loss_v += part.item()
            if args.lookup_weight:
                cells = [rows[r][2] for r in mb]
                a1, n1 = lookup_loss(lm.layers[LOOK_NEXT[0]].attention[:, LOOK_NEXT[1]], cells, 0, img_pos, P)
                a2, n2 = lookup_loss(lm.layers[LOOK_HERE[0]].attention[:, LOOK_HERE[1]], cells, -1, img_pos, P)
                if n1 + n2:
                    look = (a1 + a2) / max(1, n1 + n2) * len(mb) / len(rows)
                    look_v += float(look)
                    part = part + args.lookup_weight * look
            total = total + part
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 25 == 0:
            log(f"step {step} loss {loss_v:.4f} lookup {look_v:.4f} lr {lr:.5f} {(time.time() - start) / 60:.1f} min")
        if step % 200 == 0:
            save()
        step += 1
    log(f"decoder: {step} steps in {(time.time() - start) / 60:.1f} min")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vision-steps", type=int, default=100000, help="at most this many vision steps")
    ap.add_argument("--vision-minutes", type=float, default=15.0, help="and at most this long")
    ap.add_argument("--vision-batch", type=int, default=32)
    ap.add_argument("--vision-lr", type=float, default=4e-3)
    ap.add_argument("--steps", type=int, default=100000, help="at most this many decoder steps")
    ap.add_argument("--minutes", type=float, default=43.0, help="and at most this long")
    ap.add_argument("--images", type=int, default=12, help="images per decoder step")
    ap.add_argument("--questions", type=int, default=4, help="questions per image (rows sharing its features)")
    ap.add_argument("--micro-batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--tune-blocks", type=int, default=1, help="last vision blocks trained in phase 2")
    ap.add_argument("--lookup-weight", type=float, default=0.1)
    ap.add_argument("--thinking-off", type=float, default=0.15, help="share of prompts rendered with enable_thinking=false")
    # One thread each: on the shared 2-core machine two threads ran at half the speed of one.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--decoder-threads", type=int, default=1)
    ap.add_argument("--out", default="/tmp/tiny-glm.pt")
    ap.add_argument("--init", help="checkpoint to start from (e.g. OUT.vision with --vision-steps 0)")
    ap.add_argument("--first-seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.time()

    def log(msg):
        print(msg, flush=True)

    tok = build_tokenizer()
    c = Config(vocab_size=len(tok.vocab))
    tok.save(MODEL_DIR, model_max_length=c.max_positions)
    model = GlmOcrModel(c)
    aux = torch.nn.Linear(c.dim, N_AUX)
    aux_patch = torch.nn.Linear(c.vision_dim, N_PATCH_AUX)
    if args.init:
        ckpt = torch.load(args.init)
        model.load_state_dict(ckpt["state"])
        aux.load_state_dict(ckpt["aux"])
        aux_patch.load_state_dict(ckpt["aux_patch"])
        log(f"initialised from {args.init}")
    log(f"vocab {len(tok.vocab)}, params {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M")

    def save(path=args.out):
        torch.save({"config": c.to_dict(), "state": model.state_dict(), "aux": aux.state_dict(), "aux_patch": aux_patch.state_dict()}, path)

    if args.vision_steps and args.vision_minutes > 0:
        pretrain_vision(model, aux, aux_patch, c, args, log)
        save(args.out + ".vision")
    torch.set_num_threads(args.decoder_threads)
    if args.steps and args.minutes > 0:
        train_decoder(model, tok, c, args, log, save)
    save()
    log(f"trained in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
