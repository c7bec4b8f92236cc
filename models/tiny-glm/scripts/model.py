"""A GLM-OCR-architecture vision-language model, small enough to train on two CPU cores.

Vision (GLM-OCR's `model.visual`): patches `[N, 3·T·P·P]` in merge-window order, a patch
embedding (here a small convolutional stem over the image the patches tile, see README), 2-D
rotary over (h, w) in merge-window order, pre-norm blocks (RMSNorm, qkv with bias, q/k RMSNorm,
SwiGLU), a post RMSNorm, the 2x2 Conv2d downsample and GLM's merger (Linear -> LayerNorm -> GELU ->
SwiGLU).
Text (GLM-OCR's `model.language_model`): GLM-4 decoder layers with sandwich RMSNorms,
grouped-query attention without bias, interleaved M-RoPE (`mrope_section`), fused gate_up SwiGLU.
Everything is plain tensor ops so that it exports to ONNX with GLM-OCR's interface (export.py).
Parameter names follow Hugging Face's (`visual.*`, `language_model.*`, `lm_head`).
"""

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

MASK_VALUE = -30000.0  # finite, so fully padded rows stay NaN-free, and within float16 range


@dataclass
class Config:
    vocab_size: int = 0
    image_height: int = 112
    image_width: int = 176
    patch_size: int = 8
    temporal_patch_size: int = 2
    merge_size: int = 2
    stem: tuple = (32, 48, 64, 96)
    vision_dim: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    vision_mlp: int = 384
    merger_mlp: int = 576  # GLM-OCR: out_hidden_size · in_channels
    dim: int = 192
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 48
    mlp: int = 512
    mrope_section: tuple = (8, 8, 8)
    rope_theta: float = 10000.0
    vision_rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    max_positions: int = 1024

    @property
    def grid(self):
        return self.image_height // self.patch_size, self.image_width // self.patch_size

    @property
    def image_seq_len(self):
        gh, gw = self.grid
        return gh * gw // self.merge_size ** 2

    def to_dict(self):
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    """Qwen/GLM vision rotary: the two halves."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def rotate_half_llm(x):
    """GLM text rotary: interleaved pairs (2i, 2i+1) -> (-x[2i+1], x[2i])."""
    p = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    return torch.stack((-p[..., 1], p[..., 0]), dim=-1).reshape(x.shape)


def vision_positions(n, gw, m):
    """(hpos, wpos) of patches 0..n-1 in merge-window order, by arithmetic (research §6.4)."""
    idx = torch.arange(n)
    s, win = idx % (m * m), torch.div(idx, m * m, rounding_mode="floor")
    wpr = torch.div(gw, m, rounding_mode="floor")
    hpos = torch.div(win, wpr, rounding_mode="floor") * m + torch.div(s, m, rounding_mode="floor")
    wpos = (win % wpr) * m + s % m
    return hpos, wpos


class PatchEmbed(nn.Module):
    """Conv3d-equivalent interface: rows of pixel_values [B, N, 3·T·P·P] to [B, N, vision_dim].
    Departure from GLM-OCR (whose patch embed is one Conv3d per patch): the rows are put back into
    the image they tile, the T identical frames averaged, and a small convolutional stem (stride
    P) runs over it, so that each patch sees its neighbours; the result is read back in
    merge-window order. From scratch, per-patch embeddings learn glyph shapes far more slowly."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        assert c.patch_size == 8
        chans = (3,) + tuple(c.stem)
        strides = (2, 1, 2, 1)  # then a last stride-2 conv: 8 in all
        layers = []
        for i, s in enumerate(strides):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, s, 1, bias=False), nn.BatchNorm2d(chans[i + 1]), nn.GELU()]
        layers.append(nn.Conv2d(chans[-1], c.vision_dim, 3, 2, 1))
        self.stem = nn.Sequential(*layers)

    def forward(self, pv, gh, gw):
        c, m, p, t = self.c, self.c.merge_size, self.c.patch_size, self.c.temporal_patch_size
        b = pv.shape[0]
        hm, wm = torch.div(gh, m, rounding_mode="floor"), torch.div(gw, m, rounding_mode="floor")
        x = pv.reshape(b, hm, wm, m, m, 3, t, p, p).mean(6)            # b, hm, wm, mh, mw, C, py, px
        x = x.permute(0, 5, 1, 3, 6, 2, 4, 7).reshape(b, 3, gh * p, gw * p)
        y = self.stem(x)                                                # b, D, gh, gw
        d = y.shape[1]
        y = y.reshape(b, d, hm, m, wm, m).permute(0, 2, 4, 3, 5, 1)     # b, hm, wm, mh, mw, D
        return y.reshape(b, -1, d)


class VisionAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads = c.vision_heads
        hd = c.vision_dim // c.vision_heads
        self.qkv = nn.Linear(c.vision_dim, 3 * c.vision_dim, bias=True)
        self.proj = nn.Linear(c.vision_dim, c.vision_dim, bias=True)
        self.q_norm = RMSNorm(hd, c.rms_eps)
        self.k_norm = RMSNorm(hd, c.rms_eps)

    def forward(self, x, cos, sin):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, d))


class SwiGLU(nn.Module):
    def __init__(self, dim, hidden, bias):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class VisionBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm1 = RMSNorm(c.vision_dim, c.rms_eps)
        self.attn = VisionAttention(c)
        self.norm2 = RMSNorm(c.vision_dim, c.rms_eps)
        self.mlp = SwiGLU(c.vision_dim, c.vision_mlp, bias=True)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class Merger(nn.Module):
    """GLM's patch merger: Linear -> LayerNorm -> GELU -> SwiGLU."""

    def __init__(self, c):
        super().__init__()
        self.proj = nn.Linear(c.dim, c.dim, bias=False)
        self.post_projection_norm = nn.LayerNorm(c.dim)
        self.gate_proj = nn.Linear(c.dim, c.merger_mlp, bias=False)
        self.up_proj = nn.Linear(c.dim, c.merger_mlp, bias=False)
        self.down_proj = nn.Linear(c.merger_mlp, c.dim, bias=False)

    def forward(self, x):
        x = F.gelu(self.post_projection_norm(self.proj(x)))
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class VisionModel(nn.Module):
    """pixel_values [B, N, 3·T·P·P] of B images of one grid (gh, gw) -> image features [B, N/m², dim]."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.patch_embed = PatchEmbed(c)
        self.blocks = nn.ModuleList(VisionBlock(c) for _ in range(c.vision_layers))
        self.post_layernorm = RMSNorm(c.vision_dim, c.rms_eps)
        m = c.merge_size
        self.downsample = nn.Conv2d(c.vision_dim, c.dim, m, m)
        self.merger = Merger(c)
        hd = c.vision_dim // c.vision_heads
        # VisionRotaryEmbedding(hd/2): hd/4 frequencies for h and as many for w.
        inv = 1.0 / (c.vision_rope_theta ** (torch.arange(0, hd // 2, 2).float() / (hd // 2)))
        self.register_buffer("inv_freq", inv, persistent=False)

    def rotary(self, n, gw):
        hpos, wpos = vision_positions(n, gw, self.c.merge_size)
        theta = torch.cat([hpos[:, None].float() * self.inv_freq, wpos[:, None].float() * self.inv_freq], -1)
        emb = torch.cat([theta, theta], -1)
        return emb.cos(), emb.sin()

    def patch_tokens(self, pv, gh, gw):
        """The blocks' output after post_layernorm: [B, N, vision_dim], merge-window order."""
        x = self.patch_embed(pv, gh, gw)
        cos, sin = self.rotary(x.shape[1], gw)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        return self.post_layernorm(x)

    def downsample_tokens(self, x):
        """patch_tokens() -> the 2x2 Conv2d downsample: [B, N/m², dim]."""
        b, n, d = x.shape
        m = self.c.merge_size
        x = x.reshape(-1, m, m, d).permute(0, 3, 1, 2)
        return self.downsample(x).reshape(b, -1, self.c.dim)

    def tokens(self, pv, gh, gw):
        """Up to the downsample (frozen in phase 2): [B, N/m², dim]."""
        return self.downsample_tokens(self.patch_tokens(pv, gh, gw))

    def forward(self, pv, gh, gw):
        return self.merger(self.tokens(pv, gh, gw))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        hd = c.head_dim
        self.input_layernorm = RMSNorm(c.dim, c.rms_eps)
        self.self_attn = nn.Module()
        self.self_attn.q_proj = nn.Linear(c.dim, c.heads * hd, bias=False)
        self.self_attn.k_proj = nn.Linear(c.dim, c.kv_heads * hd, bias=False)
        self.self_attn.v_proj = nn.Linear(c.dim, c.kv_heads * hd, bias=False)
        self.self_attn.o_proj = nn.Linear(c.heads * hd, c.dim, bias=False)
        self.post_self_attn_layernorm = RMSNorm(c.dim, c.rms_eps)
        self.post_attention_layernorm = RMSNorm(c.dim, c.rms_eps)
        self.mlp = nn.Module()
        self.mlp.gate_up_proj = nn.Linear(c.dim, 2 * c.mlp, bias=False)
        self.mlp.down_proj = nn.Linear(c.mlp, c.dim, bias=False)
        self.post_mlp_layernorm = RMSNorm(c.dim, c.rms_eps)
        # Training sets this to read the attention probabilities [B, heads, S, past+S] afterwards.
        self.keep_attention = False

    def forward(self, x, cos, sin, bias, past_k, past_v):
        c, hd, a = self.c, self.c.head_dim, self.self_attn
        b, s, _ = x.shape
        h = self.input_layernorm(x)
        q = a.q_proj(h).reshape(b, s, c.heads, hd).transpose(1, 2)
        k = a.k_proj(h).reshape(b, s, c.kv_heads, hd).transpose(1, 2)
        v = a.v_proj(h).reshape(b, s, c.kv_heads, hd).transpose(1, 2)
        q = q * cos + rotate_half_llm(q) * sin
        k = k * cos + rotate_half_llm(k) * sin
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
        h = a.o_proj((att @ vv).transpose(1, 2).reshape(b, s, c.heads * hd))
        x = x + self.post_self_attn_layernorm(h)
        h = self.post_attention_layernorm(x)
        gate, up = self.mlp.gate_up_proj(h).chunk(2, dim=-1)
        h = self.mlp.down_proj(up * F.silu(gate))
        return x + self.post_mlp_layernorm(h), k, v


class TextModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        assert sum(c.mrope_section) * 2 == c.head_dim
        self.embed_tokens = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.layers))
        self.norm = RMSNorm(c.dim, c.rms_eps)
        inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2).float() / c.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)
        # Which of the t/h/w rows each frequency takes its position from (mrope_section).
        section = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(c.mrope_section)])
        self.register_buffer("section", section, persistent=False)

    def rotary(self, position_ids):
        """position_ids [3, B, S] -> cos, sin [B, 1, S, head_dim], interleaved M-RoPE (HF glm4v)."""
        freqs = position_ids[..., None].float() * self.inv_freq          # 3, B, S, hd/2
        onehot = F.one_hot(self.section, 3).t().float()                   # 3, hd/2
        freqs = (freqs * onehot[:, None, None, :]).sum(0)                 # B, S, hd/2
        emb = torch.stack([freqs, freqs], -1).reshape(*freqs.shape[:-1], -1)  # repeat_interleave(2)
        return emb.cos()[:, None], emb.sin()[:, None]

    def forward(self, embeds, attention_mask, position_ids, past=None):
        """embeds [B, S, D]; attention_mask [B, past+S] (1 = attend); position_ids [3, B, S];
        past: per layer (key, value) [B, kv_heads, past, head_dim] or None.
        Returns hidden states [B, S, D] and the per-layer (key, value) including this step."""
        s = embeds.shape[1]
        total = attention_mask.shape[1]
        cos, sin = self.rotary(position_ids)
        q_pos = torch.arange(s)[:, None] + (total - s)
        k_pos = torch.arange(total)[None, :]
        allowed = (k_pos <= q_pos)[None, None] & (attention_mask[:, None, None, :] > 0)
        bias = torch.where(allowed, torch.zeros((), dtype=embeds.dtype), torch.full((), MASK_VALUE, dtype=embeds.dtype))
        x = embeds
        present = []
        for i, layer in enumerate(self.layers):
            pk, pv = past[i] if past is not None else (None, None)
            x, k, v = layer(x, cos, sin, bias, pk, pv)
            present.append((k, v))
        return self.norm(x), present


def get_rope_index(ids, grids, image_token_id, m):
    """3-row M-RoPE positions of one unpadded sequence (research §4.1, GLM-OCR): a list of three
    lists and `next`, the position of the first generated token."""
    t, h, w = [], [], []
    cur, g, i, n = 0, 0, 0, len(ids)
    while i < n:
        if ids[i] != image_token_id:
            t.append(cur), h.append(cur), w.append(cur)
            cur += 1
            i += 1
            continue
        j = i
        while j < n and ids[j] == image_token_id:
            j += 1
        gt, gh, gw = grids[g]
        g += 1
        hh, ww = gh // m, gw // m
        assert j - i == gt * hh * ww, (j - i, grids)
        for k in range(j - i):
            t.append(cur)
            h.append(cur + (k // ww) % hh)
            w.append(cur + k % ww)
        cur += max(hh, ww)
        i = j
    return [t, h, w], cur


class GlmOcrModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.visual = VisionModel(c)
        self.language_model = TextModel(c)
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)

    def embed(self, features, input_ids, image_token_id):
        """Token embeddings with every image token, in order, replaced by the next feature row."""
        embeds = self.language_model.embed_tokens(input_ids)
        slots = input_ids == image_token_id
        return embeds.masked_scatter(slots[..., None], features.reshape(-1, self.c.dim).to(embeds.dtype))

    def forward(self, features, input_ids, attention_mask, position_ids, image_token_id):
        hidden, _ = self.language_model(self.embed(features, input_ids, image_token_id), attention_mask, position_ids)
        return self.lm_head(hidden)
