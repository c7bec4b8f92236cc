"""An Idefics3-style vision-language model, small enough to train on two CPU cores.

Vision: a hybrid ViT (a convolutional stem to 8x8 tokens, then transformer blocks). Connector: Idefics3's pixel shuffle and a linear projection.
Text: a LLaMA-style decoder (RMSNorm, rotary positions, SwiGLU, grouped-query attention).
The modules are written with plain tensor ops so that they export to ONNX with the inputs and
outputs of Hugging Face's SmolVLM exports (see export.py).
"""

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

MASK_VALUE = -30000.0  # finite, so fully padded rows stay NaN-free, and within float16 range


@dataclass
class Config:
    vocab_size: int = 0
    image_size: int = 64
    patch_size: int = 8
    vision_dim: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    vision_mlp: int = 512
    scale_factor: int = 2
    dim: int = 192
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    mlp: int = 512
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    max_positions: int = 512

    @property
    def head_dim(self):
        return self.dim // self.heads

    @property
    def image_seq_len(self):
        return (self.image_size // self.patch_size) ** 2 // self.scale_factor ** 2

    def to_dict(self):
        return asdict(self)


class VisionBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads = c.vision_heads
        self.norm1 = nn.LayerNorm(c.vision_dim)
        self.qkv = nn.Linear(c.vision_dim, 3 * c.vision_dim)
        self.proj = nn.Linear(c.vision_dim, c.vision_dim)
        self.norm2 = nn.LayerNorm(c.vision_dim)
        self.fc1 = nn.Linear(c.vision_dim, c.vision_mlp)
        self.fc2 = nn.Linear(c.vision_mlp, c.vision_dim)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(n, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh"))


class VisionEncoder(nn.Module):
    """Images [N, 3, H, W] to image features [N, image_seq_len, dim] (connector included)."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        grid = c.image_size // c.patch_size
        # A small convolutional stem before the transformer (a hybrid ViT): from scratch on a few
        # tens of thousands of images, plain 8x8 patches never learned to tell shapes apart.
        assert c.patch_size == 8
        def conv(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU()]

        self.patch = nn.Sequential(
            *conv(3, 32, 1), *conv(32, 48, 2), *conv(48, 64, 1), *conv(64, 96, 2), *conv(96, 96, 1),
            nn.Conv2d(96, c.vision_dim, 3, 2, 1),
        )
        self.pos = nn.Parameter(torch.randn(1, grid * grid, c.vision_dim) * 0.02)
        self.blocks = nn.ModuleList(VisionBlock(c) for _ in range(c.vision_layers))
        self.norm = nn.LayerNorm(c.vision_dim)
        self.connector = nn.Linear(c.vision_dim * c.scale_factor ** 2, c.dim, bias=False)
        # Where each image token sits in the grid, added to its feature: the decoder's rotary
        # positions are relative, and the question's length moves the image tokens' distance to
        # the answer, so without this "left of" and "on the right" are hard to learn.
        self.cell_pos = nn.Parameter(torch.zeros(1, c.image_seq_len, c.dim))

    def pixel_shuffle(self, x):
        """Idefics3's pixel shuffle: merges each s x s block of patches into one token."""
        s, d = self.c.scale_factor, x.shape[-1]
        side = self.c.image_size // self.c.patch_size
        x = x.reshape(-1, side, side // s, d * s).permute(0, 2, 1, 3)
        x = x.reshape(-1, side // s, side // s, d * s * s).permute(0, 2, 1, 3)
        return x.reshape(-1, (side // s) ** 2, d * s * s)

    def tokens(self, images):
        """The encoder up to the connector: pixel-shuffled tokens [N, image_seq_len, vision_dim × s²]."""
        x = self.patch(images).flatten(2).transpose(1, 2) + self.pos
        for b in self.blocks:
            x = b(x)
        return self.pixel_shuffle(self.norm(x))

    def project(self, tokens):
        """The connector: tokens() to image features [N, image_seq_len, dim]."""
        return self.connector(tokens) + self.cell_pos

    def forward(self, images):
        return self.project(self.tokens(images))


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        hd = c.head_dim
        self.input_norm = RMSNorm(c.dim, c.rms_eps)
        self.q = nn.Linear(c.dim, c.heads * hd, bias=False)
        self.k = nn.Linear(c.dim, c.kv_heads * hd, bias=False)
        self.v = nn.Linear(c.dim, c.kv_heads * hd, bias=False)
        self.o = nn.Linear(c.heads * hd, c.dim, bias=False)
        self.post_norm = RMSNorm(c.dim, c.rms_eps)
        self.gate = nn.Linear(c.dim, c.mlp, bias=False)
        self.up = nn.Linear(c.dim, c.mlp, bias=False)
        self.down = nn.Linear(c.mlp, c.dim, bias=False)
        # Training sets this to read the attention probabilities [B, heads, S, past+S] afterwards.
        self.keep_attention = False

    def forward(self, x, cos, sin, bias, past_k, past_v):
        c, hd = self.c, self.c.head_dim
        b, s, _ = x.shape
        h = self.input_norm(x)
        q = self.q(h).reshape(b, s, c.heads, hd).transpose(1, 2)
        k = self.k(h).reshape(b, s, c.kv_heads, hd).transpose(1, 2)
        v = self.v(h).reshape(b, s, c.kv_heads, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past_k is not None:
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
        rep = c.heads // c.kv_heads
        t = k.shape[2]
        kk = k[:, :, None].expand(b, c.kv_heads, rep, t, hd).reshape(b, c.heads, t, hd)
        vv = v[:, :, None].expand(b, c.kv_heads, rep, t, hd).reshape(b, c.heads, t, hd)
        att = torch.softmax(q @ kk.transpose(-1, -2) / hd ** 0.5 + bias, dim=-1)
        if self.keep_attention:
            self.attention = att
        x = x + self.o((att @ vv).transpose(1, 2).reshape(b, s, c.heads * hd))
        h = self.post_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h)), k, v


class TextDecoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.layers))
        self.norm = RMSNorm(c.dim, c.rms_eps)
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)
        inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2).float() / c.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, embeds, attention_mask, position_ids, past=None):
        """embeds [B, S, D]; attention_mask [B, past+S] (1 = attend); position_ids [B, S];
        past: per layer (key, value) [B, kv_heads, past, head_dim] or None.
        Returns logits [B, S, V] and the per-layer (key, value) including this step."""
        s = embeds.shape[1]
        total = attention_mask.shape[1]
        freqs = position_ids[..., None].float() * self.inv_freq
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]
        cos, sin = emb.cos(), emb.sin()
        q_pos = torch.arange(s, device=embeds.device)[:, None] + (total - s)
        k_pos = torch.arange(total, device=embeds.device)[None, :]
        allowed = (k_pos <= q_pos)[None, None] & (attention_mask[:, None, None, :] > 0)
        bias = torch.where(allowed, torch.zeros((), dtype=embeds.dtype), torch.full((), MASK_VALUE, dtype=embeds.dtype))
        x = embeds
        present = []
        for i, layer in enumerate(self.layers):
            pk, pv = past[i] if past is not None else (None, None)
            x, k, v = layer(x, cos, sin, bias, pk, pv)
            present.append((k, v))
        return self.lm_head(self.norm(x)), present


class VisionLanguageModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.vision = VisionEncoder(c)
        self.text = TextDecoder(c)

    def forward(self, features, input_ids, attention_mask, image_token_id):
        """Training forward from image features [N, image_seq_len, dim] (self.vision's output): every
        image token in input_ids, in order, takes the next feature row. Returns the logits."""
        embeds = self.text.embed(input_ids)
        slots = input_ids == image_token_id
        embeds = embeds.masked_scatter(slots[..., None], features.reshape(-1, self.c.dim).to(embeds.dtype))
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        logits, _ = self.text(embeds, attention_mask, position_ids)
        return logits
