"""Synthetic receipts and price tags, with questions and answers in English and Chinese.

Everything is a pure function of the seed: `make_sample(seed)` always draws the same image, the
same text and the same questions, so a held-out set is just a range of seeds that training never
uses. Images are WIDTH x HEIGHT (176 x 112): already at their smart_resize size, so no resampler
ever touches them (see README, "Images").

Canonical answers (exact-match strings):
- a price is "¥" and its integer value, no leading zeros, no separators: "¥299";
- a date is "YYYY-MM-DD": "2024-03-15";
- `field` and `current` answer with one value (price or date) alone;
- `transcribe` answers with the printed lines, top to bottom, joined by "\\n", exactly as printed;
- `json` answers with json.dumps of all six keys in KEYS order, prices as integers, the date as
  a string, null for a field the image lacks (separators ", " and ": ", no spaces inside).
"""

import json
import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 176, 112
# Debian package fonts-wqy-microhei.
FONT_PATH = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
FONT_SIZES = (14, 15)
_FONTS = {}

# The fixed key set and order of the JSON answers, with the printed labels.
KEYS = ["original_price", "current_price", "total", "discount", "paid", "date"]
LABELS = {
    "original_price": ("原价", "Original price"),
    "current_price": ("现价", "Now"),
    "total": ("合计", "Total"),
    "discount": ("优惠", "Discount"),
    "paid": ("实付", "Paid"),
    "date": ("日期", "Date"),
}

KINDS = ["field", "current", "transcribe", "json"]

FIELD_QUESTIONS = {
    ("original_price", "en"): ["What is the original price?", "What was the original price?"],
    ("current_price", "en"): ["What is the current price?", "What is the price now?"],
    ("total", "en"): ["What is the total?", "How much is the total?"],
    ("discount", "en"): ["What is the discount?", "How much is the discount?"],
    ("paid", "en"): ["How much was paid?", "What is the amount paid?"],
    ("date", "en"): ["What is the date?", "Which date is shown?"],
    ("original_price", "zh"): ["原价是多少？", "原来的价格是多少？"],
    ("current_price", "zh"): ["现价是多少？", "现在的价格是多少？"],
    ("total", "zh"): ["合计是多少？", "合计金额是多少？"],
    ("discount", "zh"): ["优惠是多少？", "优惠了多少钱？"],
    ("paid", "zh"): ["实付是多少？", "实际支付了多少？"],
    ("date", "zh"): ["日期是哪天？", "图中的日期是什么？"],
}
QUESTIONS = {
    ("current", "en"): ["Which price is the current one?", "Two prices are shown. Which one is the current price?"],
    ("current", "zh"): ["哪个价格是现价？", "图中有两个价格，哪个是现在的价格？"],
    ("transcribe", "en"): ["Read all the text.", "Transcribe the text in the image."],
    ("transcribe", "zh"): ["识别图中所有文字。", "读出图中的所有文字。"],
    ("json", "en"): ["Return all fields as JSON.", "Extract the fields as JSON."],
    ("json", "zh"): ["以JSON格式返回所有字段。", "用JSON提取所有字段。"],
}


def font(size):
    if size not in _FONTS:
        _FONTS[size] = ImageFont.truetype(FONT_PATH, size)
    return _FONTS[size]


def _price(rng):
    digits = rng.choices([1, 2, 3, 4], weights=[1, 3, 4, 2])[0]
    return rng.randint(1 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)


def _date(rng):
    y, m = rng.randint(2015, 2030), rng.randint(1, 12)
    days = [31, 29 if y % 4 == 0 else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1]
    return f"{y:04d}-{m:02d}-{rng.randint(1, days):02d}"


def value_text(key, value):
    return value if key == "date" else f"¥{value}"


def make_scene(rng):
    """The printed fields (key, value) top to bottom, and the label language."""
    if rng.random() < 0.35:  # a price tag: original and current price, sometimes a date
        keys = ["original_price", "current_price"]
        if rng.random() < 0.25:
            keys.reverse()
        if rng.random() < 0.25:
            keys.append("date")
    else:  # a receipt: one to five of the six fields
        keys = rng.sample(KEYS, rng.randint(1, 5))
        if rng.random() < 0.6:
            keys.sort(key=KEYS.index)
    fields = [(k, _date(rng) if k == "date" else _price(rng)) for k in keys]
    return {"fields": fields, "lang": rng.choice(["zh", "en"])}


def lines_of(scene):
    zh = scene["lang"] == "zh"
    return [f"{LABELS[k][0 if zh else 1]} {value_text(k, v)}" for k, v in scene["fields"]]


def _background(rng):
    kind = rng.choice(["plain", "tinted", "gradient", "noisy"])
    base = np.array([rng.randint(225, 255) for _ in range(3)], np.float32)
    if kind == "plain":
        base[:] = rng.randint(232, 255)
    img = np.broadcast_to(base, (HEIGHT, WIDTH, 3)).copy()
    if kind == "gradient":
        other = np.array([rng.randint(200, 255) for _ in range(3)], np.float32)
        a = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
        t = (xx * math.cos(a) + yy * math.sin(a))
        t = (t - t.min()) / max(1e-6, t.max() - t.min())
        img = base * (1 - t[..., None]) + other * t[..., None]
    return img, kind


def render(scene, rng):
    """The image, and for every printed character (spaces excluded) its line index, its index in
    the line, the character and its centre (x, y) in the final image."""
    lines = lines_of(scene)
    size = rng.choice(FONT_SIZES)
    f = font(size)
    pitch = min(rng.randint(size + 4, size + 8), (HEIGHT - 12) // len(lines))
    widths = [f.getlength(t) for t in lines]
    block_w, block_h = max(widths), pitch * (len(lines) - 1) + size + 2
    x0 = rng.uniform(5, max(5, WIDTH - 5 - block_w))
    y0 = rng.uniform(4, max(4, HEIGHT - 4 - block_h)) - 2
    angle = rng.uniform(-2.5, 2.5)
    ink = tuple(rng.randint(0, 70) for _ in range(3))

    layer = Image.new("L", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(layer)
    chars = []
    for li, text in enumerate(lines):
        y = y0 + li * pitch
        draw.text((x0, y), text, font=f, fill=255)
        for ci, ch in enumerate(text):
            if ch == " ":
                continue
            a, b = f.getlength(text[:ci]), f.getlength(text[:ci + 1])
            top, bottom = f.getbbox(ch)[1], f.getbbox(ch)[3]
            chars.append([li, ci, ch, x0 + (a + b) / 2, y + (top + bottom) / 2])
    # Rotate the ink about the block's centre; PIL's positive angle is counter-clockwise.
    cx, cy = x0 + block_w / 2, y0 + block_h / 2
    layer = layer.rotate(angle, resample=Image.BICUBIC, center=(cx, cy))
    th = math.radians(angle)
    for c in chars:
        dx, dy = c[3] - cx, c[4] - cy
        c[3], c[4] = cx + dx * math.cos(th) + dy * math.sin(th), cy - dx * math.sin(th) + dy * math.cos(th)

    bg, kind = _background(rng)
    alpha = np.asarray(layer, np.float32)[..., None] / 255.0
    img = bg * (1 - alpha) + np.array(ink, np.float32) * alpha
    if kind == "noisy":
        img = img + np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(4, 12), img.shape)
    img = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")
    return img, [tuple(c) for c in chars]


def answer_json(scene):
    have = dict(scene["fields"])
    return json.dumps({k: have.get(k) for k in KEYS}, ensure_ascii=False)


def question(scene, kind, lang, rng):
    """(question, answer, key) for one kind of question, or None if the scene cannot answer it.
    `key` is the field the answer reads (field and current kinds), else None."""
    have = dict(scene["fields"])
    if kind == "field":
        key = rng.choice([k for k, _ in scene["fields"]])
        return rng.choice(FIELD_QUESTIONS[(key, lang)]), value_text(key, have[key]), key
    if kind == "current":
        if "original_price" not in have or "current_price" not in have:
            return None
        return rng.choice(QUESTIONS[(kind, lang)]), value_text("current_price", have["current_price"]), "current_price"
    if kind == "transcribe":
        return rng.choice(QUESTIONS[(kind, lang)]), "\n".join(lines_of(scene)), None
    if kind == "json":
        return rng.choice(QUESTIONS[(kind, lang)]), answer_json(scene), None
    raise ValueError(kind)


def make_sample(seed, n_questions=3, kinds=KINDS):
    """An image, its scene and character boxes, and up to n_questions (question, answer, kind, key)."""
    rng = random.Random(seed)
    scene = make_scene(rng)
    img, chars = render(scene, rng)
    qas = []
    order = list(kinds)
    rng.shuffle(order)
    for kind in order:  # distinct kinds (the list may repeat one to weight it)
        if len(qas) == n_questions:
            break
        if any(kind == k for _, _, k, _ in qas):
            continue
        qa = question(scene, kind, rng.choice(["en", "zh"]), rng)
        if qa:
            qas.append((qa[0], qa[1], kind, qa[2]))
    return img, scene, chars, qas


if __name__ == "__main__":
    import sys
    for s in range(int(sys.argv[1]) if len(sys.argv) > 1 else 4):
        img, scene, chars, qas = make_sample(s)
        img.save(f"/tmp/synth_{s}.png")
        print(s, lines_of(scene), qas)
