"""Exports a checkpoint to the GLM-OCR ONNX layout that transformers.js (as `glm_ocr`) and Glance read.

    /usr/bin/python3 models/tiny-glm/scripts/export.py /tmp/tiny-glm.pt

Writes onnx/{vision_encoder,embed_tokens,decoder_model_merged}.onnx, their published quantized
variants (`_quantized` dynamic int8 and `_q4` MatMulNBits: scripts/models/quantize.py), and the JSON configs
(config.json, generation_config.json, preprocessor_config.json). tokenizer.json and
tokenizer_config.json are written by train.py.
"""

import json
import os
import sys

import onnx
import torch
from torch import nn

from model import Config, GlmOcrModel
from processor import IMAGE_MEAN, IMAGE_STD
from tokenizer import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
# The published quantized formats, shared with scripts/make-model.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "scripts", "models"))
import quantize  # noqa: E402
# TINY_GLM_DIR exports elsewhere, e.g. a checkpoint to try without touching the committed model.
MODEL_DIR = os.environ.get("TINY_GLM_DIR", os.path.dirname(HERE))
ONNX_DIR = os.path.join(MODEL_DIR, "onnx")
OPSET = 17


class VisionExport(nn.Module):
    """pixel_values [N, 3·T·P·P] of one image and image_grid_thw [1, 3] -> image_features [N/m², D]."""

    def __init__(self, visual):
        super().__init__()
        self.visual = visual

    def forward(self, pixel_values, image_grid_thw):
        gh, gw = image_grid_thw[0, 1], image_grid_thw[0, 2]
        return self.visual(pixel_values[None], gh, gw)[0]


class EmbedExport(nn.Module):
    def __init__(self, embed):
        super().__init__()
        self.embed = embed

    def forward(self, input_ids):
        return self.embed(input_ids)


class DecoderExport(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs_embeds, attention_mask, position_ids, *flat_past):
        past = [(flat_past[2 * i], flat_past[2 * i + 1]) for i in range(len(flat_past) // 2)]
        hidden, present = self.model.language_model(inputs_embeds, attention_mask, position_ids, past)
        return (self.model.lm_head(hidden), *[t for kv in present for t in kv])


def export(module, args, path, inputs, outputs, axes):
    torch.onnx.export(module, args, path, input_names=inputs, output_names=outputs, dynamic_axes=axes,
                      opset_version=OPSET, do_constant_folding=True)
    onnx.checker.check_model(onnx.load(path))
    print("wrote", os.path.relpath(path, MODEL_DIR), f"{os.path.getsize(path) / 1e6:.2f} MB")


def write_json(name, obj):
    with open(os.path.join(MODEL_DIR, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_configs(c, tok):
    tid = tok.token_id
    eos = [tid("<|endoftext|>"), tid("<|user|>")]
    pad = tid("<|endoftext|>")
    write_json("config.json", {
        "architectures": ["GlmOcrForConditionalGeneration"],
        "model_type": "glm_ocr",
        "image_token_id": tid("<|image|>"),
        "video_token_id": tid("<|video|>"),
        "image_start_token_id": tid("<|begin_of_image|>"),
        "image_end_token_id": tid("<|end_of_image|>"),
        "video_start_token_id": tid("<|begin_of_video|>"),
        "video_end_token_id": tid("<|end_of_video|>"),
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
            "num_nextn_predict_layers": 0,
            "rms_norm_eps": c.rms_eps,
            "hidden_act": "silu",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "tie_word_embeddings": False,
            "eos_token_id": eos,
            "pad_token_id": pad,
            "rope_parameters": {
                "rope_type": "default",
                "mrope_section": list(c.mrope_section),
                "partial_rotary_factor": 1.0,
                "rope_theta": c.rope_theta,
            },
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
    })
    write_json("generation_config.json", {
        "eos_token_id": eos,
        "pad_token_id": pad,
        "do_sample": False,
        "max_new_tokens": 128,
    })
    # min = max = 2·H·W of the training size: smart_resize leaves 176x112 unchanged and brings any
    # other image to about the same number of pixels (a 352x224 image exactly to 176x112).
    pixels = c.temporal_patch_size * c.image_height * c.image_width
    write_json("preprocessor_config.json", {
        "image_processor_type": "Glm46VImageProcessor",
        "processor_class": "Glm46VProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": pixels, "longest_edge": pixels},
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": IMAGE_MEAN,
        "image_std": IMAGE_STD,
        "patch_size": c.patch_size,
        "temporal_patch_size": c.temporal_patch_size,
        "merge_size": c.merge_size,
    })


def main():
    ckpt = torch.load(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-glm.pt")
    c = Config(**ckpt["config"])
    model = GlmOcrModel(c)
    model.load_state_dict(ckpt["state"])
    model.eval()
    tok = Tokenizer.load(MODEL_DIR)
    assert len(tok.vocab) == c.vocab_size
    os.makedirs(ONNX_DIR, exist_ok=True)
    gh, gw = 6, 8  # any grid: the graph takes it from image_grid_thw
    with torch.no_grad():
        export(VisionExport(model.visual),
               (torch.randn(gh * gw, 3 * c.temporal_patch_size * c.patch_size ** 2), torch.tensor([[1, gh, gw]])),
               os.path.join(ONNX_DIR, "vision_encoder.onnx"), ["pixel_values", "image_grid_thw"], ["image_features"],
               {"pixel_values": {0: "num_patches"}, "image_grid_thw": {0: "num_images"},
                "image_features": {0: "num_image_tokens"}})
        export(EmbedExport(model.language_model.embed_tokens), (torch.zeros(2, 3, dtype=torch.long),),
               os.path.join(ONNX_DIR, "embed_tokens.onnx"), ["input_ids"], ["inputs_embeds"],
               {"input_ids": {0: "batch_size", 1: "sequence_length"}, "inputs_embeds": {0: "batch_size", 1: "sequence_length"}})
        b, past, new = 2, 3, 2
        flat_past, past_names, present_names, axes = [], [], [], {
            "inputs_embeds": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "position_ids": {1: "batch_size", 2: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"},
        }
        for i in range(c.layers):
            for kind in ("key", "value"):
                flat_past.append(torch.randn(b, c.kv_heads, past, c.head_dim))
                past_names.append(f"past_key_values.{i}.{kind}")
                present_names.append(f"present.{i}.{kind}")
                axes[past_names[-1]] = {0: "batch_size", 2: "past_sequence_length"}
                axes[present_names[-1]] = {0: "batch_size", 2: "total_sequence_length"}
        decoder_path = os.path.join(ONNX_DIR, "decoder_model_merged.onnx")
        export(DecoderExport(model),
               (torch.randn(b, new, c.dim), torch.ones(b, past + new, dtype=torch.long),
                torch.arange(past, past + new).repeat(3, b, 1), *flat_past),
               decoder_path, ["inputs_embeds", "attention_mask", "position_ids", *past_names],
               ["logits", *present_names], axes)
    quantize.write_variants(ONNX_DIR)
    write_configs(c, tok)


if __name__ == "__main__":
    main()
