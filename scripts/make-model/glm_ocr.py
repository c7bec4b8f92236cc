"""GLM-OCR (0.9B) at its published size, with random weights, in models/tiny-glm's layout.

models/tiny-glm is a GLM-OCR-architecture model that Glance and transformers.js agree on token
for token; this builds the same graphs (its decoder, vision blocks, merger and export wrappers
are imported, not copied) at GLM-OCR's dimensions, with GLM-OCR's own patch embedding (one
linear map of each 2x14x14 patch, which is what its Conv3d computes) in place of tiny-glm's
convolutional stem. The fp32 decoder is 2.3 GB, over protobuf's 2 GB, so its weights go to
decoder_model_merged.onnx_data beside it, as in Hugging Face's large exports. The variants:
the fp16 decoder, q8 and q4 (scripts/models/quantize.py), and the q4f16 set as onnx-community
publishes it (float16 pixel values, embeddings, cache and logits; every graph with .onnx_data;
the decoder's num_logits_to_keep).
"""

import os
import time

import torch
from torch import nn

from common import REPO, cache_io, export_graph, init_weights, quantize, tiny_scripts, write_json
import logits_to_keep
from float16 import write_float16
from tokenizer_pad import pad_tokenizer

SEED = 9
VOCAB = 59392
MAX_POSITIONS = 131072
DIMS = dict(
    vocab_size=VOCAB, dim=1536, layers=16, heads=16, kv_heads=8, head_dim=128, mlp=4608, mrope_section=(16, 24, 24),
    rope_theta=10000.0, rms_eps=1e-5, max_positions=MAX_POSITIONS,
    patch_size=14, temporal_patch_size=2, merge_size=2, vision_dim=1024, vision_layers=24, vision_heads=16,
    vision_mlp=4096, merger_mlp=4608, vision_rope_theta=10000.0,
    image_height=336, image_width=336,  # GLM-OCR's vision_config.image_size; the graphs take any grid
)
# Hugging Face's Glm46V defaults, which GLM-OCR's preprocessor_config.json leaves implicit;
# spelled out as in models/tiny-glm, because transformers.js reads an absent do_normalize as off.
MIN_PIXELS, MAX_PIXELS = 12544, 9633792


class PatchEmbed(nn.Module):
    """GLM-OCR's patch embedding: Conv3d(3 -> D, kernel = stride = (2, 14, 14)) over rows that
    are one patch each, ordered (C, T, y, x) as the Conv3d's weight is: a Linear on the row."""

    def __init__(self, c):
        super().__init__()
        self.proj = nn.Linear(3 * c.temporal_patch_size * c.patch_size ** 2, c.vision_dim)

    def forward(self, pv, gh, gw):
        return self.proj(pv)


def vision_model(tiny_model, c):
    """tiny-glm's VisionModel with GLM-OCR's patch embedding. Its constructor builds tiny-glm's
    stem, made for 8-pixel patches only, so this one is assembled here with the same parts; the
    forward (2-D rotary in merge-window order, blocks, downsample, merger) is tiny-glm's."""

    class GlmOcrVision(tiny_model.VisionModel):
        def __init__(self):
            nn.Module.__init__(self)
            self.c = c
            self.patch_embed = PatchEmbed(c)
            self.blocks = nn.ModuleList(tiny_model.VisionBlock(c) for _ in range(c.vision_layers))
            self.post_layernorm = tiny_model.RMSNorm(c.vision_dim, c.rms_eps)
            self.downsample = nn.Conv2d(c.vision_dim, c.dim, c.merge_size, c.merge_size)
            self.merger = tiny_model.Merger(c)
            hd = c.vision_dim // c.vision_heads
            inv = 1.0 / (c.vision_rope_theta ** (torch.arange(0, hd // 2, 2).float() / (hd // 2)))
            self.register_buffer("inv_freq", inv, persistent=False)

    return GlmOcrVision()


class Text(nn.Module):
    """The decoder half of tiny-glm's GlmOcrModel: what its DecoderExport reads."""

    def __init__(self, tiny_model, c):
        super().__init__()
        self.language_model = tiny_model.TextModel(c)
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)


def build_model(tiny_model, seed):
    c = tiny_model.Config(**DIMS)
    vision, text = vision_model(tiny_model, c), Text(tiny_model, c)
    # Separate seeds per tower, so a change to one does not redraw the other.
    init_weights(vision, seed, c.vision_layers, residual=(".attn.proj.weight", ".mlp.down_proj.weight"))
    init_weights(text, seed + 1, c.layers, residual=(".self_attn.o_proj.weight", ".mlp.down_proj.weight"))
    scale_sandwich_norms(text, c.layers)
    return c, vision.eval(), text.eval()


def scale_sandwich_norms(text, layers):
    """GLM normalises each attention and MLP output again before adding it to the residual
    stream (its "sandwich" norms), which undoes the small init of the projections: at scale 1
    every layer adds a unit vector, nearly the same at every position (random attention
    averages the values), the token embeddings (0.02) drown, and greedy decoding repeats one
    token whatever the image. At the residual projections' scale the stream keeps its tokens."""
    with torch.no_grad():
        for layer in text.language_model.layers:
            for norm in (layer.post_self_attn_layernorm, layer.post_mlp_layernorm):
                norm.weight.fill_(0.02 / (2 * layers) ** 0.5)


def sanity_check(tiny_model, c, vision, text, image_token_id):
    """Fails the build on weights that make a useless benchmark model: logits that are not
    finite, or the same for every token. Runs in PyTorch on an 8x8-patch image, before the export."""
    torch.manual_seed(0)
    gh = gw = 8
    with torch.no_grad():
        pv = torch.randn(1, gh * gw, 3 * c.temporal_patch_size * c.patch_size ** 2)
        features = vision(pv, torch.tensor(gh), torch.tensor(gw))[0]
        ids = [1, 2, 4, 7] + [image_token_id] * features.shape[0] + [8, 100, 200, 5]
        rows, _ = tiny_model.get_rope_index(ids, [(1, gh, gw)], image_token_id, c.merge_size)
        ids = torch.tensor([ids])
        embeds = text.language_model.embed_tokens(ids)
        embeds[0, 4:4 + features.shape[0]] = features
        hidden, _ = text.language_model(embeds, torch.ones_like(ids), torch.tensor(rows)[:, None])
        logits = text.lm_head(hidden)
    last = logits[0, -1]
    assert torch.isfinite(logits).all(), "the logits are not finite"
    assert last.std() > 1e-3, f"the logits are nearly constant (std {last.std():.2e})"
    print(f"sanity: image features std {features.std():.3f}, last logits std {last.std():.3f}, "
          f"argmax {int(last.argmax())}")


def configs(c, ids):
    """GLM-OCR's JSON files (research glm-family §2.1-2.2), with this tokenizer's token ids."""
    eos = [ids["<|endoftext|>"], ids["<|user|>"]]
    pad = ids["<|endoftext|>"]
    return {
        "config.json": {
            "architectures": ["GlmOcrForConditionalGeneration"],
            "model_type": "glm_ocr",
            "image_token_id": ids["<|image|>"],
            "video_token_id": ids["<|video|>"],
            "image_start_token_id": ids["<|begin_of_image|>"],
            "image_end_token_id": ids["<|end_of_image|>"],
            "video_start_token_id": ids["<|begin_of_video|>"],
            "video_end_token_id": ids["<|end_of_video|>"],
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "text_config": {
                "model_type": "glm_ocr_text",
                "vocab_size": c.vocab_size,
                "hidden_size": c.dim,
                "intermediate_size": c.mlp,
                "num_hidden_layers": c.layers,
                "num_attention_heads": c.heads,
                "num_key_value_heads": c.kv_heads,
                "head_dim": c.head_dim,
                "max_position_embeddings": c.max_positions,
                # GLM-OCR's multi-token-prediction layer is not part of its ONNX export.
                "num_nextn_predict_layers": 0,
                "rms_norm_eps": c.rms_eps,
                "hidden_act": "silu",
                "attention_bias": False,
                "attention_dropout": 0.0,
                "tie_word_embeddings": False,
                "eos_token_id": eos,
                "pad_token_id": pad,
                "rope_parameters": {"rope_type": "default", "mrope_section": list(c.mrope_section),
                                    "partial_rotary_factor": 1.0, "rope_theta": c.rope_theta},
                "torch_dtype": "float32",
            },
            "vision_config": {
                "model_type": "glm_ocr_vision",
                "depth": c.vision_layers,
                "hidden_size": c.vision_dim,
                "num_heads": c.vision_heads,
                "intermediate_size": c.vision_mlp,
                "patch_size": c.patch_size,
                "temporal_patch_size": c.temporal_patch_size,
                "spatial_merge_size": c.merge_size,
                "out_hidden_size": c.dim,
                "in_channels": 3,
                "image_size": c.image_width,
                "rms_norm_eps": c.rms_eps,
                "attention_bias": True,
                "hidden_act": "silu",
            },
            # transformers.js fetches a graph's external data only when told so; full file names,
            # since the fp16 and q8 decoders are single files (quantize.py adds the q4f16 ones).
            "transformers.js_config": {"use_external_data_format": {"decoder_model_merged.onnx": 1}},
        },
        "generation_config.json": {"eos_token_id": eos, "pad_token_id": pad, "do_sample": False, "max_new_tokens": 128},
        "preprocessor_config.json": {
            "image_processor_type": "Glm46VImageProcessor",
            "processor_class": "Glm46VProcessor",
            "do_convert_rgb": True,
            "do_resize": True,
            "size": {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
            "resample": 3,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "patch_size": c.patch_size,
            "temporal_patch_size": c.temporal_patch_size,
            "merge_size": c.merge_size,
        },
    }


def export_onnx(tiny_export, c, vision, text, onnx_dir):
    """tiny-glm's export, step for step (its wrappers), at this model's size."""
    decoder = os.path.join(onnx_dir, "decoder_model_merged.onnx")
    with torch.no_grad():
        t = time.time()
        gh, gw = 6, 8  # any grid: the graph takes it from image_grid_thw
        export_graph(tiny_export.VisionExport(vision),
                     (torch.randn(gh * gw, 3 * c.temporal_patch_size * c.patch_size ** 2), torch.tensor([[1, gh, gw]])),
                     os.path.join(onnx_dir, "vision_encoder.onnx"), ["pixel_values", "image_grid_thw"], ["image_features"],
                     {"pixel_values": {0: "num_patches"}, "image_grid_thw": {0: "num_images"},
                      "image_features": {0: "num_image_tokens"}})
        export_graph(tiny_export.EmbedExport(text.language_model.embed_tokens), (torch.zeros(2, 3, dtype=torch.long),),
                     os.path.join(onnx_dir, "embed_tokens.onnx"), ["input_ids"], ["inputs_embeds"],
                     {"input_ids": {0: "batch_size", 1: "sequence_length"},
                      "inputs_embeds": {0: "batch_size", 1: "sequence_length"}})
        print(f"  ({time.time() - t:.0f} s)")
        t = time.time()
        b, past, new = 2, 3, 2
        flat_past, past_names, present_names, cache_axes = cache_io(c.layers, c.kv_heads, c.head_dim, b, past)
        axes = {"inputs_embeds": {0: "batch_size", 1: "sequence_length"},
                "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
                "position_ids": {1: "batch_size", 2: "sequence_length"},
                "logits": {0: "batch_size", 1: "sequence_length"}, **cache_axes}
        export_graph(tiny_export.DecoderExport(text),
                     (torch.randn(b, new, c.dim), torch.ones(b, past + new, dtype=torch.long),
                      torch.arange(past, past + new).repeat(3, b, 1), *flat_past),
                     decoder, ["inputs_embeds", "attention_mask", "position_ids", *past_names], ["logits", *present_names], axes)
        print(f"  ({time.time() - t:.0f} s)")
    return decoder


def build(out_dir, seed=SEED):
    tiny_model, tiny_export = tiny_scripts("tiny-glm", "TINY_GLM_DIR", out_dir, "model", "export")
    onnx_dir = os.path.join(out_dir, "onnx")
    os.makedirs(onnx_dir, exist_ok=True)

    vocab = pad_tokenizer(os.path.join(REPO, "models", "tiny-glm"), out_dir, VOCAB, MAX_POSITIONS)
    for name, obj in configs(tiny_model.Config(**DIMS), vocab).items():
        write_json(out_dir, name, obj)

    t = time.time()
    c, vision, text = build_model(tiny_model, seed)
    print(f"weights: vision {sum(p.numel() for p in vision.parameters()) / 1e6:.1f}M, "
          f"text {sum(p.numel() for p in text.parameters()) / 1e6:.1f}M parameters ({time.time() - t:.0f} s)")
    sanity_check(tiny_model, c, vision, text, vocab["<|image|>"])
    decoder = export_onnx(tiny_export, c, vision, text, onnx_dir)
    del vision, text  # several GB that the variants below need more

    t = time.time()
    write_float16(decoder, os.path.join(onnx_dir, "decoder_model_merged_fp16.onnx"))
    print(f"wrote onnx/decoder_model_merged_fp16.onnx ({time.time() - t:.0f} s)")
    t = time.time()
    quantize.write_variants(onnx_dir)
    # The published q4f16 set (onnx-community/GLM-OCR-ONNX): all three graphs, each with its
    # .onnx_data; the decoder's from the fp16 one above, with num_logits_to_keep.
    quantize.write_variants(onnx_dir, ["q4f16"], external_data=True)
    logits_to_keep.rewrite_file(os.path.join(onnx_dir, "decoder_model_merged_q4f16.onnx"))
    print(f"  ({time.time() - t:.0f} s)")
