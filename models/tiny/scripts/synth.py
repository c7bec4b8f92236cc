"""Synthetic images of shapes with questions and answers in English and Chinese.

Everything is a pure function of the seed: `make_sample(seed)` always draws the same image and
the same questions, so a held-out set is just a range of seeds that training never uses.
"""

import json
import random

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64

COLORS = {
    "red": ((220, 30, 30), "红色"),
    "green": ((30, 170, 50), "绿色"),
    "blue": ((35, 70, 220), "蓝色"),
    "yellow": ((240, 210, 20), "黄色"),
    "purple": ((140, 40, 180), "紫色"),
    "orange": ((250, 130, 10), "橙色"),
}
SHAPES = {
    "circle": "圆形",
    "square": "正方形",
    "triangle": "三角形",
    "star": "星形",
    "cross": "十字形",
}
BACKGROUNDS = {"plain": "纯色", "gradient": "渐变", "noisy": "噪点"}
POSITIONS = {"left": "左边", "right": "右边", "top": "上方", "bottom": "下方"}
# Listings go left to right; centres at least this far apart keep that order well defined.
MIN_X_GAP = 6
# The least difference, in grey levels, between the two ends of a gradient background.
MIN_GRADIENT = 48
COUNT_EN = {1: "One", 2: "Two", 3: "Three"}
COUNT_ZH = {1: "一个", 2: "两个", 3: "三个"}

KINDS = ["color", "shape", "count", "position", "describe", "json"]
# The kinds that ask about one shape: colour and position questions name it, shape questions name its colour.
ABOUT_ONE_SHAPE = {"color", "shape", "position"}

QUESTIONS = {
    ("color", "en"): ["What color is the {shape}?", "What colour is the {shape}?", "Which color is the {shape}?"],
    ("color", "zh"): ["{shape_zh}是什么颜色？", "图中的{shape_zh}是什么颜色的？"],
    ("shape", "en"): ["What shape is {color}?", "Which shape is {color}?", "What is the {color} shape?"],
    ("shape", "zh"): ["{color_zh}的是什么图形？", "哪个图形是{color_zh}的？"],
    ("count", "en"): ["How many shapes are there?", "How many shapes are in the image?", "Count the shapes."],
    ("count", "zh"): ["图中有几个图形？", "一共有多少个图形？"],
    ("position", "en"): ["Where is the {shape}?", "Where is the {shape} in the image?"],
    ("position", "zh"): ["{shape_zh}在哪里？", "{shape_zh}在图的什么位置？"],
    ("describe", "en"): ["Describe the image.", "Describe the image in one sentence.", "What do you see?"],
    ("describe", "zh"): ["描述这张图片。", "用一句话描述这张图片。"],
    ("json", "en"): ["List the shapes as JSON.", "Return every shape and its color as JSON."],
    ("json", "zh"): ["用JSON列出所有图形。", "以JSON格式列出每个图形和颜色。"],
}


def _star(cx, cy, r):
    pts = []
    for i in range(10):
        rad = r if i % 2 == 0 else r * 0.45
        a = -np.pi / 2 + i * np.pi / 5
        pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
    return pts


def _draw_shape(draw, kind, cx, cy, r, fill):
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)], fill=fill)
    elif kind == "star":
        draw.polygon(_star(cx, cy, r * 1.1), fill=fill)
    elif kind == "cross":
        w = r * 0.38
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)


def _background(rng, kind, size):
    """Low-saturation backgrounds, so that no background can be mistaken for a shape's colour."""
    def muted():
        g = rng.uniform(15, 240)
        return np.array([g + rng.uniform(-12, 12) for _ in range(3)])

    if kind == "plain":
        img = np.ones((size, size, 3)) * muted()
    elif kind == "gradient":
        a, b = muted(), muted()
        # A gradient between two near-equal greys looks plain; move the far end (without another
        # draw, so every later draw of the sample stays as it was) until the ramp is plain to see.
        if np.abs(b - a).max() < MIN_GRADIENT:
            b = a + (1 if a.mean() < 128 else -1) * (MIN_GRADIENT + np.abs(b - a))
        t = np.linspace(0, 1, size)
        if rng.random() < 0.5:
            t = t[None, :, None]
        else:
            t = t[:, None, None]
        img = a * (1 - t) + b * t
        img = np.broadcast_to(img, (size, size, 3))
    else:
        base = muted()
        nrng = np.random.default_rng(rng.getrandbits(32))
        img = base + nrng.normal(0, rng.uniform(10, 30), (size, size, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


def position_of(cx, cy):
    """The answer to "where is it", or None where the shape sits too close to a diagonal or the centre."""
    dx, dy = cx - SIZE / 2, cy - SIZE / 2
    if max(abs(dx), abs(dy)) < 10 or abs(abs(dx) - abs(dy)) < 6:
        return None
    if abs(dx) > abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def make_scene(rng):
    n = rng.choice([1, 2, 3])
    kinds = rng.sample(list(SHAPES), n)
    colors = rng.sample(list(COLORS), n)
    placed = []
    for k, c in zip(kinds, colors):
        for _ in range(200):
            r = rng.uniform(7, 13)
            cx = rng.uniform(r + 2, SIZE - r - 2)
            cy = rng.uniform(r + 2, SIZE - r - 2)
            if all((cx - p["x"]) ** 2 + (cy - p["y"]) ** 2 > (r + p["r"] + 3) ** 2
                   and abs(cx - p["x"]) >= MIN_X_GAP for p in placed):
                break
        placed.append({"shape": k, "color": c, "x": cx, "y": cy, "r": r})
    # Left to right: the order every listing answer uses.
    placed.sort(key=lambda p: p["x"])
    return {"shapes": placed, "background": rng.choice(list(BACKGROUNDS))}


def render(scene, rng):
    """Draws at 1, 2 or 4 times the size and scales down, so edges range from hard to anti-aliased."""
    scale = rng.choice([1, 2, 4])
    bg = _background(rng, scene["background"], SIZE)
    img = Image.fromarray(bg).resize((SIZE * scale, SIZE * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for p in scene["shapes"]:
        jitter = tuple(int(np.clip(v + rng.uniform(-20, 20), 0, 255)) for v in COLORS[p["color"]][0])
        _draw_shape(draw, p["shape"], p["x"] * scale, p["y"] * scale, p["r"] * scale, jitter)
    if scale != 1:
        img = img.resize((SIZE, SIZE), Image.LANCZOS)
    return img


def shape_map(scene):
    """Per pixel, 1 + the index of the shape drawn there (0 for background): training labels."""
    img = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(img)
    for i, p in enumerate(scene["shapes"]):
        _draw_shape(draw, p["shape"], p["x"], p["y"], p["r"], i + 1)
    return np.asarray(img)


def _join_en(items):
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def answer(scene, kind, lang, target):
    shapes = scene["shapes"]
    if kind == "color":
        c = target["color"]
        return c.capitalize() + "." if lang == "en" else COLORS[c][1] + "。"
    if kind == "shape":
        s = target["shape"]
        return f"A {s}." if lang == "en" else SHAPES[s] + "。"
    if kind == "count":
        return COUNT_EN[len(shapes)] + "." if lang == "en" else COUNT_ZH[len(shapes)] + "。"
    if kind == "position":
        p = position_of(target["x"], target["y"])
        return f"On the {p}." if lang == "en" else f"在{POSITIONS[p]}。"
    if kind == "describe":
        bg = scene["background"]
        if lang == "en":
            items = [f"a {p['color']} {p['shape']}" for p in shapes]
            text = _join_en(items) + f" on a {bg} background."
            return text[0].upper() + text[1:]
        items = [f"一个{COLORS[p['color']][1]}{SHAPES[p['shape']]}" for p in shapes]
        return f"{BACKGROUNDS[bg]}背景上有" + "、".join(items) + "。"
    if kind == "json":
        return json.dumps({"shapes": [{"shape": p["shape"], "color": p["color"]} for p in shapes]},
                          separators=(",", ":"))
    raise ValueError(kind)


def question(scene, kind, lang, rng):
    """(question, answer, index in scene["shapes"] of the shape it asks about or None for the kinds
    about the whole image), or None if no question of this kind fits the scene."""
    target = rng.choice(scene["shapes"])
    if kind == "position":
        fits = [p for p in scene["shapes"] if position_of(p["x"], p["y"])]
        if not fits:
            return None
        target = rng.choice(fits)
    template = rng.choice(QUESTIONS[(kind, lang)])
    text = template.format(shape=target["shape"], color=target["color"],
                           shape_zh=SHAPES[target["shape"]], color_zh=COLORS[target["color"]][1])
    about = scene["shapes"].index(target) if kind in ABOUT_ONE_SHAPE else None
    return text, answer(scene, kind, lang, target), about


def make_sample(seed, kinds=KINDS, n_questions=1, langs=("en", "zh")):
    """One image and `n_questions` (question, answer, kind, lang, about) tuples, all determined by
    `seed`; `about` is as question() gives it."""
    rng = random.Random(seed)
    scene = make_scene(rng)
    image = render(scene, rng)
    qas = []
    while len(qas) < n_questions:
        kind, lang = rng.choice(kinds), rng.choice(langs)
        qa = question(scene, kind, lang, rng)
        if qa:
            q, a, about = qa
            qas.append((q, a, kind, lang, about))
    return image, scene, qas
