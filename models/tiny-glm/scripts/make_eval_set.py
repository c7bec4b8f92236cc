"""Writes the held-out set: 200 images and 600 questions from seeds training never uses.

    /usr/bin/python3 models/tiny-glm/scripts/make_eval_set.py

Every kind of question appears 150 times, 75 in English and 75 in Chinese. The images are PNGs at
176x112, their smart_resize size, so no resampler touches them in any processor.
"""

import json
import os
import random

from synth import KINDS, make_scene, question, render
from train import EVAL_SEED_BASE

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.environ.get("TINY_GLM_DIR", os.path.dirname(HERE)), "heldout")
IMAGES = 200
PER_IMAGE = 3


def main():
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    rows = []
    seed = EVAL_SEED_BASE
    for j in range(IMAGES):
        # Question q = 3j + t asks kind q mod 4 in language (q div 4) mod 2: each of the 8
        # (kind, language) pairs 75 times, and three different kinds per image.
        asks = [(KINDS[q % len(KINDS)], ("en", "zh")[(q // len(KINDS)) % 2]) for q in range(PER_IMAGE * j, PER_IMAGE * (j + 1))]
        while True:
            rng = random.Random(seed)
            seed += 1
            scene = make_scene(rng)
            image, _ = render(scene, rng)
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
