"""Exports a trained checkpoint to the SmolVLM ONNX layout that transformers.js and Glance read.

    /usr/bin/python3 models/tiny/scripts/export.py /tmp/tiny.pt

Writes onnx/{vision_encoder,embed_tokens,decoder_model_merged}.onnx, their published quantized
variants (`_quantized` dynamic int8 and `_q4` MatMulNBits: scripts/models/quantize.py), and the JSON configs.
"""

import json
import os
import sys

import onnx
import torch
from torch import nn

from model import Config, VisionLanguageModel
from tokenizer import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
# The published quantized formats, shared with scripts/make-model.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "scripts", "models"))
import quantize  # noqa: E402
# TINY_MODEL_DIR exports elsewhere, e.g. a checkpoint to try without touching the committed model.
MODEL_DIR = os.environ.get("TINY_MODEL_DIR", os.path.dirname(HERE))
ONNX_DIR = os.path.join(MODEL_DIR, "onnx")
OPSET = 17


class VisionExport(nn.Module):
    """pixel_values [B, N, 3, H, W] and pixel_attention_mask [B, N, H, W] to features of the real
    images only, [N_real, image_seq_len, D]: all-padding slots (mask all false) are dropped."""

    def __init__(self, vision):
        super().__init__()
        self.vision = vision

    def forward(self, pixel_values, pixel_attention_mask):
        c = self.vision.c
        images = pixel_values.reshape(-1, 3, c.image_size, c.image_size)
        real = pixel_attention_mask.reshape(-1, c.image_size * c.image_size).to(torch.int32).sum(-1) > 0
        images = images.index_select(0, torch.nonzero(real)[:, 0])
        return self.vision(images)


class EmbedExport(nn.Module):
    def __init__(self, embed):
        super().__init__()
        self.embed = embed

    def forward(self, input_ids):
        return self.embed(input_ids)


class DecoderExport(nn.Module):
    def __init__(self, text):
        super().__init__()
        self.text = text

    def forward(self, inputs_embeds, attention_mask, position_ids, *flat_past):
        past = [(flat_past[2 * i], flat_past[2 * i + 1]) for i in range(len(flat_past) // 2)]
        logits, present = self.text(inputs_embeds, attention_mask, position_ids, past)
        return (logits, *[t for kv in present for t in kv])


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
    ids = {t: tok.token_id(t) for t in ["<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<image>"]}
    write_json("config.json", {
        "architectures": ["Idefics3ForConditionalGeneration"],
        "model_type": "idefics3",
        "image_token_id": ids["<image>"],
        "scale_factor": c.scale_factor,
        "bos_token_id": ids["<|im_start|>"],
        "eos_token_id": ids["<end_of_utterance>"],
        "pad_token_id": ids["<|im_end|>"],
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
            "bos_token_id": ids["<|im_start|>"],
            "eos_token_id": ids["<end_of_utterance>"],
            "pad_token_id": ids["<|im_end|>"],
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
        },
    })
    write_json("generation_config.json", {
        "bos_token_id": ids["<|im_start|>"],
        "eos_token_id": [ids["<end_of_utterance>"]],
        "pad_token_id": ids["<|im_end|>"],
        "do_sample": False,
        "max_new_tokens": 64,
    })
    write_json("preprocessor_config.json", {
        "image_processor_type": "Idefics3ImageProcessor",
        "processor_class": "Idefics3Processor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"longest_edge": c.image_size},
        "resample": 1,
        "do_image_splitting": False,
        "max_image_size": {"longest_edge": c.image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    })
    write_json("processor_config.json", {"processor_class": "Idefics3Processor", "image_seq_len": c.image_seq_len})


def main():
    ckpt = torch.load(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny.pt")
    c = Config(**ckpt["config"])
    model = VisionLanguageModel(c)
    model.load_state_dict(ckpt["state"])
    model.eval()
    tok = Tokenizer.load(MODEL_DIR)
    assert len(tok.vocab) == c.vocab_size
    os.makedirs(ONNX_DIR, exist_ok=True)
    s = c.image_size
    with torch.no_grad():
        export(VisionExport(model.vision), (torch.randn(1, 2, 3, s, s), torch.ones(1, 2, s, s, dtype=torch.bool)),
               os.path.join(ONNX_DIR, "vision_encoder.onnx"), ["pixel_values", "pixel_attention_mask"], ["image_features"],
               {"pixel_values": {0: "batch_size", 1: "num_images"},
                "pixel_attention_mask": {0: "batch_size", 1: "num_images"},
                "image_features": {0: "num_real_images"}})
        export(EmbedExport(model.text.embed), (torch.zeros(2, 3, dtype=torch.long),),
               os.path.join(ONNX_DIR, "embed_tokens.onnx"), ["input_ids"], ["inputs_embeds"],
               {"input_ids": {0: "batch_size", 1: "sequence_length"}, "inputs_embeds": {0: "batch_size", 1: "sequence_length"}})
        b, past, new = 2, 3, 2
        flat_past, past_names, present_names, axes = [], [], [], {
            "inputs_embeds": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
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
        export(DecoderExport(model.text),
               (torch.randn(b, new, c.dim), torch.ones(b, past + new, dtype=torch.long),
                torch.arange(past, past + new).repeat(b, 1), *flat_past),
               decoder_path, ["inputs_embeds", "attention_mask", "position_ids", *past_names],
               ["logits", *present_names], axes)
    quantize.write_variants(ONNX_DIR)
    write_configs(c, tok)


if __name__ == "__main__":
    main()
