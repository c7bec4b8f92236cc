"""Writes the held-out set: 200 images and 600 questions from seeds training never uses.

    /usr/bin/python3 models/tiny/scripts/make_eval_set.py

Every kind of question appears 100 times, 50 in English and 50 in Chinese.
"""

import json
import os
import random

from synth import KINDS, make_scene, question, render
from train import EVAL_SEED_BASE

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.environ.get("TINY_MODEL_DIR", os.path.dirname(HERE)), "heldout")
IMAGES = 200
PER_IMAGE = 3


def main():
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    rows = []
    seed = EVAL_SEED_BASE
    for j in range(IMAGES):
        while True:
            rng = random.Random(seed)
            seed += 1
            scene = make_scene(rng)
            image = render(scene, rng)
            asks = [(KINDS[(PER_IMAGE * j + t) % len(KINDS)], ("en", "zh")[(j // 2 + t) % 2]) for t in range(PER_IMAGE)]
            qas = [question(scene, kind, lang, rng) for kind, lang in asks]
            if all(qas):
                break
        name = f"images/{j:03d}.png"
        image.save(os.path.join(OUT, name), optimize=True)
        for (kind, lang), (q, a, _) in zip(asks, qas):
            rows.append({"image": name, "kind": kind, "lang": lang, "question": q, "answer": a})
    with open(os.path.join(OUT, "questions.jsonl"), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} questions about {IMAGES} images to {os.path.relpath(OUT)}")


if __name__ == "__main__":
    main()
