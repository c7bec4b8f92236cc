"""GLM-OCR's image processing (Hugging Face Glm46VImageProcessor semantics, research §3.1).

Images that are already at their smart_resize size are never resampled (the held-out images and
every training image are), so only rescale, normalise, the temporal repeat and the patch order
matter; `smart_resize` is here to check that claim.
"""

import math

import numpy as np

IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


def smart_resize(height, width, factor, min_pixels, max_pixels, temporal_factor=2):
    """HF's smart_resize (round-half-even, floor in the scale-up), with GLM's temporal factor."""
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise ValueError("aspect ratio over 200")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if temporal_factor * h_bar * w_bar > max_pixels:
        beta = math.sqrt(temporal_factor * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif temporal_factor * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (temporal_factor * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def to_patches(img, patch=8, temporal=2, merge=2):
    """An RGB PIL image at its smart_resize size -> (pixel_values [N, 3·T·P·P] float32 in
    merge-window order, rows ordered (C, T, py, px); grid (1, gh, gw))."""
    x = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    x = (x - np.array(IMAGE_MEAN, np.float32)) / np.array(IMAGE_STD, np.float32)
    x = x.transpose(2, 0, 1)[None].repeat(temporal, 0)  # T, C, H, W
    _, c, h, w = x.shape
    gh, gw = h // patch, w // patch
    x = x.reshape(1, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gh * gw, c * temporal * patch * patch)
    return np.ascontiguousarray(x, dtype=np.float32), (1, gh, gw)
