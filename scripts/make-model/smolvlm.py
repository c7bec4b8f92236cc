"""SmolVLM-256M-Instruct at its published size, with random weights, in models/tiny's layout.

models/tiny is an Idefics3 model that Glance and transformers.js agree on token for token; this
builds the same graphs (its decoder, attention blocks and export wrappers are imported, not
copied) at SmolVLM-256M's dimensions, with SigLIP's plain 16x16 patch embedding in place of
tiny's convolutional stem, and with SmolVLM's image splitting (512x512 tiles plus a global
image, images up to 2048 pixels a side), so that a benchmark pays what the real model costs.
"""

import os
import time

import torch
from torch import nn

from common import REPO, cache_io, init_weights, quantize, tiny_scripts, write_json
from float16 import write_float16
from tokenizer_pad import pad_tokenizer

SEED = 256
VOCAB = 49280
TILE = 512
LONGEST_EDGE = 2048  # published: images are resized to this, then cut into up to 4x4 tiles of TILE
DIMS = dict(
    vocab_size=VOCAB, dim=576, layers=30, heads=9, kv_heads=3, mlp=1536, rope_theta=100000.0, rms_eps=1e-5,
    max_positions=8192,
    image_size=TILE, patch_size=16, vision_dim=768, vision_layers=12, vision_heads=12, vision_mlp=3072, scale_factor=4,
)
SIGLIP_EPS = 1e-6


class SiglipVision(nn.Module):
    """Idefics3's vision tower and connector: tiles [N, 3, 512, 512] to image features
    [N, 64, 576]. SigLIP: a stride-16 patch convolution, learned positions for the 32x32 patches,
    pre-norm blocks (tiny's, which are SigLIP's: LayerNorm, biased attention, tanh-GELU MLP), a
    post LayerNorm; then the pixel shuffle (4x4 patches into one token) and a bias-free linear
    projection to the decoder's width. Tiles are always whole (Idefics3 resizes images to
    multiples of the tile), so positions are the plain 0..1023 and no patch is masked."""

    def __init__(self, c, vision_block):
        super().__init__()
        self.c = c  # tiny's VisionExport reads c.image_size
        self.patch_embedding = nn.Conv2d(3, c.vision_dim, c.patch_size, c.patch_size)
        self.position_embedding = nn.Parameter(torch.zeros(1, (c.image_size // c.patch_size) ** 2, c.vision_dim))
        self.blocks = nn.ModuleList(vision_block(c) for _ in range(c.vision_layers))
        for b in self.blocks:
            b.norm1.eps = b.norm2.eps = SIGLIP_EPS
        self.post_layernorm = nn.LayerNorm(c.vision_dim, eps=SIGLIP_EPS)
        self.connector = nn.Linear(c.vision_dim * c.scale_factor ** 2, c.dim, bias=False)

    def pixel_shuffle(self, x):
        """Idefics3Connector.pixel_shuffle: each s x s block of patches becomes one token."""
        s, d = self.c.scale_factor, x.shape[-1]
        side = self.c.image_size // self.c.patch_size
        x = x.reshape(-1, side, side // s, d * s).permute(0, 2, 1, 3)
        x = x.reshape(-1, side // s, side // s, d * s * s).permute(0, 2, 1, 3)
        return x.reshape(-1, (side // s) ** 2, d * s * s)

    def forward(self, images):
        x = self.patch_embedding(images).flatten(2).transpose(1, 2) + self.position_embedding
        for b in self.blocks:
            x = b(x)
        return self.connector(self.pixel_shuffle(self.post_layernorm(x)))


def build_model(tiny_model, seed):
    c = tiny_model.Config(**DIMS)
    vision = SiglipVision(c, tiny_model.VisionBlock)
    text = tiny_model.TextDecoder(c)
    # Separate seeds per tower, so a change to one does not redraw the other.
    init_weights(vision, seed, c.vision_layers, residual=(".proj.weight", ".fc2.weight"))
    init_weights(text, seed + 1, c.layers, residual=(".o.weight", ".down.weight"))
    return c, vision.eval(), text.eval()


def sanity_check(c, vision, text, image_token_id):
    """Fails the build on weights that make a useless benchmark model: logits that are not
    finite, or the same for every token. Runs in PyTorch on one tile, before the slow export."""
    torch.manual_seed(0)
    with torch.no_grad():
        features = vision(torch.rand(1, 3, c.image_size, c.image_size) * 2 - 1)[0]
        ids = torch.tensor([[1, 5, 6] + [image_token_id] * c.image_seq_len + [5, 100, 200, 300]])
        embeds = text.embed(ids)
        embeds[0, 3:3 + c.image_seq_len] = features
        logits, _ = text(embeds, torch.ones_like(ids), torch.arange(ids.shape[1])[None])
    last = logits[0, -1]
    assert torch.isfinite(logits).all(), "the logits are not finite"
    assert last.std() > 1e-3, f"the logits are nearly constant (std {last.std():.2e})"
    print(f"sanity: image features std {features.std():.3f}, last logits std {last.std():.3f}, "
          f"argmax {int(last.argmax())}")


def configs(c, ids, longest_edge):
    """The JSON files of SmolVLM-256M-Instruct, with this tokenizer's special token ids."""
    special = dict(bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<end_of_utterance>"], pad_token_id=ids["<|im_end|>"])
    return {
        "config.json": {
            "architectures": ["Idefics3ForConditionalGeneration"],
            "model_type": "idefics3",
            "image_token_id": ids["<image>"],
            "scale_factor": c.scale_factor,
            **special,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "text_config": {
                "model_type": "llama",
                "vocab_size": c.vocab_size,
                "hidden_size": c.dim,
                "intermediate_size": c.mlp,
                "num_hidden_layers": c.layers,
                "num_attention_heads": c.heads,
                "num_key_value_heads": c.kv_heads,
                "head_dim": c.head_dim,
                "hidden_act": "silu",
                "max_position_embeddings": c.max_positions,
                "rms_norm_eps": c.rms_eps,
                "rope_theta": c.rope_theta,
                **special,
                "tie_word_embeddings": False,
            },
            "vision_config": {
                "model_type": "idefics3_vision",
                "hidden_size": c.vision_dim,
                "intermediate_size": c.vision_mlp,
                "num_hidden_layers": c.vision_layers,
                "num_attention_heads": c.vision_heads,
                "image_size": c.image_size,
                "patch_size": c.patch_size,
                "num_channels": 3,
                "layer_norm_eps": SIGLIP_EPS,
                "hidden_act": "gelu_pytorch_tanh",
                "max_image_size": {"longest_edge": TILE},
                "size": {"longest_edge": longest_edge},
            },
        },
        "generation_config.json": {**special, "eos_token_id": [special["eos_token_id"]], "do_sample": False, "max_new_tokens": 64},
        "preprocessor_config.json": {
            "image_processor_type": "Idefics3ImageProcessor",
            "processor_class": "Idefics3Processor",
            "do_convert_rgb": True,
            "do_resize": True,
            "size": {"longest_edge": longest_edge},
            "resample": 1,  # Lanczos, as SmolVLM's
            "do_image_splitting": True,
            "max_image_size": {"longest_edge": TILE},
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "do_pad": True,
        },
        "processor_config.json": {"processor_class": "Idefics3Processor", "image_seq_len": c.image_seq_len},
    }


def check_tokens(vocab):
    """Image splitting writes these tokens into prompts; up to 4x4 tiles come from 2048/512."""
    side = LONGEST_EDGE // TILE
    needed = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>", "<|im_start|>", "<|im_end|>"]
    needed += [f"<row_{r}_col_{k}>" for r in range(1, side + 1) for k in range(1, side + 1)]
    missing = [t for t in needed if t not in vocab]
    assert not missing, f"the tokenizer lacks {missing}"


def build(out_dir, seed=SEED, longest_edge=LONGEST_EDGE):
    """`longest_edge`: the processor's size.longest_edge, a multiple of the tile, which SmolVLM's
    users lower for speed (N x 512): 512 makes every image one tile of 64 tokens, 1024 four tiles
    and the global image (320), 2048 (published) up to sixteen and the global image (1088)."""
    assert longest_edge % TILE == 0 and TILE <= longest_edge <= LONGEST_EDGE, "longest_edge must be 512, 1024, 1536 or 2048"
    tiny_model, tiny_export = tiny_scripts("tiny", "TINY_MODEL_DIR", out_dir, "model", "export")
    onnx_dir = os.path.join(out_dir, "onnx")
    os.makedirs(onnx_dir, exist_ok=True)

    vocab = pad_tokenizer(os.path.join(REPO, "models", "tiny"), out_dir, VOCAB, DIMS["max_positions"])
    check_tokens(vocab)
    for name, obj in configs(tiny_model.Config(**DIMS), vocab, longest_edge).items():
        write_json(out_dir, name, obj)

    t = time.time()
    c, vision, text = build_model(tiny_model, seed)
    print(f"weights: vision {sum(p.numel() for p in vision.parameters()) / 1e6:.1f}M, "
          f"text {sum(p.numel() for p in text.parameters()) / 1e6:.1f}M parameters ({time.time() - t:.0f} s)")
    sanity_check(c, vision, text, vocab["<image>"])
    export_onnx(tiny_export, c, vision, text, onnx_dir)


def export_onnx(tiny_export, c, vision, text, onnx_dir):
    """tiny's export, step for step (its wrappers and helpers), at this model's size."""
    s = c.image_size
    decoder = os.path.join(onnx_dir, "decoder_model_merged.onnx")
    with torch.no_grad():
        t = time.time()
        tiny_export.export(
            tiny_export.VisionExport(vision), (torch.randn(1, 2, 3, s, s), torch.ones(1, 2, s, s, dtype=torch.bool)),
            os.path.join(onnx_dir, "vision_encoder.onnx"), ["pixel_values", "pixel_attention_mask"], ["image_features"],
            {"pixel_values": {0: "batch_size", 1: "num_images"}, "pixel_attention_mask": {0: "batch_size", 1: "num_images"},
             "image_features": {0: "num_real_images"}})
        tiny_export.export(
            tiny_export.EmbedExport(text.embed), (torch.zeros(2, 3, dtype=torch.long),),
            os.path.join(onnx_dir, "embed_tokens.onnx"), ["input_ids"], ["inputs_embeds"],
            {"input_ids": {0: "batch_size", 1: "sequence_length"}, "inputs_embeds": {0: "batch_size", 1: "sequence_length"}})
        print(f"  ({time.time() - t:.0f} s)")
        t = time.time()
        b, past, new = 2, 3, 2
        flat_past, past_names, present_names, cache_axes = cache_io(c.layers, c.kv_heads, c.head_dim, b, past)
        axes = {"inputs_embeds": {0: "batch_size", 1: "sequence_length"},
                "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
                "position_ids": {0: "batch_size", 1: "sequence_length"},
                "logits": {0: "batch_size", 1: "sequence_length"}, **cache_axes}
        tiny_export.export(
            tiny_export.DecoderExport(text),
            (torch.randn(b, new, c.dim), torch.ones(b, past + new, dtype=torch.long), torch.arange(past, past + new).repeat(b, 1), *flat_past),
            decoder, ["inputs_embeds", "attention_mask", "position_ids", *past_names], ["logits", *present_names], axes)
        print(f"  ({time.time() - t:.0f} s)")
    t = time.time()
    write_float16(decoder, os.path.join(onnx_dir, "decoder_model_merged_fp16.onnx"))
    print(f"wrote onnx/decoder_model_merged_fp16.onnx ({time.time() - t:.0f} s)")
    t = time.time()
    # The published variant names: _quantized (q8), _q4 and _q4f16 (its decoder from the fp16 one above).
    quantize.write_variants(onnx_dir, ["q8", "q4", "q4f16"])
    print(f"  ({time.time() - t:.0f} s)")
