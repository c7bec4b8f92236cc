"""What the model builders share: importing a tiny model's scripts, seeded weights, JSON files."""

import importlib
import json
import math
import os
import sys

import torch
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The published q8 and q4 formats, shared with the tiny models' exports.
sys.path.insert(0, os.path.join(REPO, "scripts", "models"))
import quantize  # noqa: E402,F401


def tiny_scripts(model, dir_env, out_dir, *modules):
    """Imports modules of models/<model>/scripts, whose classes and export helpers the builders
    reuse so that the big models are the very graphs Glance and transformers.js already agree on
    at tiny size. Those scripts name their output folder by an environment variable read at
    import (`dir_env`); pointing it at `out_dir` makes their messages name files relative to the
    folder being built. models/tiny and models/tiny-glm both have a model.py, so one process
    builds one family."""
    os.environ[dir_env] = out_dir
    sys.path.insert(0, os.path.join(REPO, "models", model, "scripts"))
    return [importlib.import_module(m) for m in modules]


def is_norm(module):
    """LayerNorm and the tiny models' RMSNorm, whose scale starts at 1 as in a trained model's init."""
    return isinstance(module, nn.LayerNorm) or type(module).__name__ == "RMSNorm"


def init_weights(model, seed, layers, residual):
    """Draws every parameter from `seed`, in parameter order, so a build is reproducible: normal
    with std 0.02 (GPT-2's and LLaMA's init), norms at 1 and biases at 0, and the projections
    that write into the residual stream (`residual`: parameter names ending so) at
    0.02 / sqrt(2 · layers), so that the stream's scale stays that of one layer however deep the
    stack: activations stay finite (also in float16) and logits spread, not saturate."""
    torch.manual_seed(seed)
    norms = {name for name, m in model.named_modules() if is_norm(m)}
    small = 0.02 / math.sqrt(2 * layers)
    with torch.no_grad():
        for name, p in model.named_parameters():
            owner, _, kind = name.rpartition(".")
            if owner in norms:
                p.fill_(1.0 if kind == "weight" else 0.0)
            elif kind == "bias":
                p.zero_()
            else:
                p.normal_(0.0, small if any(name.endswith(r) for r in residual) else 0.02)


def write_json(out_dir, name, obj):
    with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def export_graph(module, args, path, inputs, outputs, axes, opset=17):
    """torch.onnx.export, also for graphs over protobuf's 2 GB. torch then writes every weight
    to a file of its own beside the graph; they are gathered into one `<name>.onnx_data` (the
    layout of Hugging Face's large exports, which onnxruntime finds beside the graph and
    transformers.js fetches by that name), so the export goes to a scratch folder first."""
    import shutil
    import tempfile

    import onnx

    scratch = tempfile.mkdtemp(prefix=".export-", dir=os.path.dirname(path))
    try:
        first = os.path.join(scratch, os.path.basename(path))
        torch.onnx.export(module, args, first, input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=opset, do_constant_folding=True)
        if len(os.listdir(scratch)) == 1:
            os.replace(first, path)
        else:
            data = os.path.basename(path) + "_data"
            if os.path.exists(path + "_data"):
                os.remove(path + "_data")  # onnx appends to an existing data file
            onnx.save_model(onnx.load(first), path, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data, size_threshold=1024)
    finally:
        shutil.rmtree(scratch)
    onnx.checker.check_model(path)  # by path: a model over 2 GB cannot be checked in memory
    data = f" + {os.path.getsize(path + '_data') / 1e6:.2f} MB of _data" if os.path.exists(path + "_data") else ""
    print(f"wrote onnx/{os.path.basename(path)} {os.path.getsize(path) / 1e6:.2f} MB{data}")


def cache_io(layers, kv_heads, head_dim, batch, past):
    """Example past_key_values for a decoder's export, their names, the present outputs' names,
    and the dynamic axes of both (batch, and past or total sequence length)."""
    flat_past, past_names, present_names, axes = [], [], [], {}
    for i in range(layers):
        for kind in ("key", "value"):
            flat_past.append(torch.randn(batch, kv_heads, past, head_dim))
            past_names.append(f"past_key_values.{i}.{kind}")
            present_names.append(f"present.{i}.{kind}")
            axes[past_names[-1]] = {0: "batch_size", 2: "past_sequence_length"}
            axes[present_names[-1]] = {0: "batch_size", 2: "total_sequence_length"}
    return flat_past, past_names, present_names, axes
