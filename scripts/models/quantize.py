"""Writes the quantized variants of a model folder's ONNX graphs in the formats the published
exports use (transformers.js's quantization script and Optimum, both through onnxruntime's
quantization tools), so that Glance is measured and tested on what users download:

    /usr/bin/python3 scripts/models/quantize.py MODEL_DIR [--dtype q8,q4] [--graph NAME ...]

- q8 (`<graph>_quantized.onnx`): onnxruntime's dynamic quantization, as
  `quantize_dynamic(per_channel=True, weight_type=QInt8)` writes it. Every MatMul by a constant
  2-D weight becomes DynamicQuantizeLinear (uint8 activations, one scale per tensor) ->
  MatMulInteger (int8 weights, one scale per output column, zero point 0) -> Cast -> Mul by the
  product of the scales; onnxruntime fuses that into its int8 GEMM (AMX or VNNI where the CPU has
  them). A Gather from a constant table (the embeddings) becomes a Gather from its int8 copy
  followed by DequantizeLinear, one scale for the table.
- q4 (`<graph>_q4.onnx`): every MatMul by a constant 2-D weight becomes com.microsoft's
  MatMulNBits, 4-bit symmetric blocks of 32 along K (zero point 8, left implicit), with
  accuracy_level 4 (activations quantized to int8 per row and block, so a row's result does
  not depend on the rows beside it). Gathers stay float, as MatMul4BitsQuantizer leaves them:
  such a graph is the fp32 one, so none is written and readers fall back to it.

onnxruntime's Python package is not a Debian package, so the rewrite is done here with onnx and
numpy, node for node as those tools write it. Graphs whose quantized weights would pass
protobuf's 2 GB go to one `<name>.onnx_data` beside them, as the fp32 exports do.
"""

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

GRAPHS = ["vision_encoder", "embed_tokens", "decoder_model_merged"]
SUFFIXES = {"q8": "_quantized", "q4": "_q4"}
Q4_BLOCK = 32
# Weights smaller than this stay float, as onnxruntime's quantizers leave tiny tensors alone.
MIN_WEIGHT_ELEMENTS = 256
EXTERNAL_DATA_BYTES = 1_800_000_000


def constant_weights(graph, op_type, input_index):
    """Initializers used only as input `input_index` of `op_type` nodes, 2-D float32 and not tiny:
    the weights a quantizer may replace without changing any other reader."""
    inits = {i.name: i for i in graph.initializer}
    uses = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            uses.setdefault(name, []).append((node.op_type, k))
    out = {}
    for name, init in inits.items():
        if init.data_type != TensorProto.FLOAT or len(init.dims) != 2 or np.prod(init.dims) < MIN_WEIGHT_ELEMENTS:
            continue
        if set(uses.get(name, [])) == {(op_type, input_index)}:
            out[name] = init
    return out


def int8_per_column(w):
    """Symmetric int8 with one scale per column (the output channel of `x @ w`)."""
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def quantize_q8(model):
    graph = model.graph
    weights = constant_weights(graph, "MatMul", 1)
    tables = constant_weights(graph, "Gather", 0)
    new_inits, nodes, quantized_inputs = [], [], {}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            x, w_name = node.input[0], node.input[1]
            y = node.output[0]
            if x not in quantized_inputs:
                quantized_inputs[x] = (f"{x}_quantized", f"{x}_scale", f"{x}_zero_point")
                nodes.append(helper.make_node("DynamicQuantizeLinear", [x], list(quantized_inputs[x]),
                                              name=f"{x}_QuantizeLinear"))
            xq, xs, xz = quantized_inputs[x]
            q, scale = int8_per_column(numpy_helper.to_array(weights[w_name]))
            new_inits += [numpy_helper.from_array(q, f"{w_name}_quantized"),
                          numpy_helper.from_array(scale, f"{w_name}_scale"),
                          numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{w_name}_zero_point")]
            base = node.name or y
            nodes += [
                helper.make_node("MatMulInteger", [xq, f"{w_name}_quantized", xz, f"{w_name}_zero_point"],
                                 [f"{y}_quantized"], name=f"{base}_quant"),
                helper.make_node("Cast", [f"{y}_quantized"], [f"{y}_cast"], to=TensorProto.FLOAT,
                                 name=f"{base}_cast"),
                helper.make_node("Mul", [xs, f"{w_name}_scale"], [f"{y}_scales"], name=f"{base}_scales_mul"),
                helper.make_node("Mul", [f"{y}_cast", f"{y}_scales"], [y], name=f"{base}_output_scale_mul"),
            ]
        elif node.op_type == "Gather" and node.input[0] in tables:
            t_name, y = node.input[0], node.output[0]
            t = numpy_helper.to_array(tables[t_name])
            scale = np.float32(max(np.abs(t).max(), 1e-12) / 127.0)
            new_inits += [numpy_helper.from_array(np.clip(np.round(t / scale), -127, 127).astype(np.int8), f"{t_name}_quantized"),
                          numpy_helper.from_array(np.array(scale, np.float32), f"{t_name}_scale"),
                          numpy_helper.from_array(np.array(0, np.int8), f"{t_name}_zero_point")]
            nodes += [
                helper.make_node("Gather", [f"{t_name}_quantized", node.input[1]], [f"{y}_quantized"],
                                 axis=next((a.i for a in node.attribute if a.name == "axis"), 0), name=node.name),
                helper.make_node("DequantizeLinear", [f"{y}_quantized", f"{t_name}_scale", f"{t_name}_zero_point"], [y],
                                 name=f"{node.name or y}_DequantizeLinear"),
            ]
        else:
            nodes.append(node)
    replaced = set(weights) | set(tables)
    return replace_graph(model, nodes, new_inits, replaced, len(weights) + len(tables))


def int4_blocks(w):
    """MatMulNBits' 4-bit layout of a [K, N] weight: per output column, blocks of 32 along K
    (K padded with zeros to a whole block), symmetric with zero point 8, two values a byte, the
    even one in the low nibble. Returns B [N, blocks, 16] and scales [N * blocks]."""
    k, n = w.shape
    blocks = -(-k // Q4_BLOCK)
    cols = np.zeros((n, blocks * Q4_BLOCK), np.float32)
    cols[:, :k] = w.T
    cols = cols.reshape(n, blocks, Q4_BLOCK)
    scale = np.maximum(np.abs(cols).max(axis=2), 1e-12) / 7.0
    q = (np.clip(np.round(cols / scale[:, :, None]), -8, 7) + 8).astype(np.uint8)
    packed = q[:, :, 0::2] | (q[:, :, 1::2] << 4)
    return packed, scale.astype(np.float32).reshape(-1)


def quantize_q4(model):
    graph = model.graph
    weights = constant_weights(graph, "MatMul", 1)
    new_inits, nodes = [], []
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            w_name = node.input[1]
            w = numpy_helper.to_array(weights[w_name])
            packed, scale = int4_blocks(w)
            new_inits += [numpy_helper.from_array(packed, f"{w_name}_Q4"), numpy_helper.from_array(scale, f"{w_name}_scales")]
            nodes.append(helper.make_node("MatMulNBits", [node.input[0], f"{w_name}_Q4", f"{w_name}_scales"], [node.output[0]],
                                          name=f"{node.name or node.output[0]}_Q4", domain="com.microsoft",
                                          K=w.shape[0], N=w.shape[1], bits=4, block_size=Q4_BLOCK, accuracy_level=4))
        else:
            nodes.append(node)
    model = replace_graph(model, nodes, new_inits, set(weights), len(weights))
    if weights and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def replace_graph(model, nodes, new_inits, replaced, count):
    graph = model.graph
    kept = [i for i in graph.initializer if i.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    del graph.node[:]
    graph.node.extend(nodes)
    return model if count else None


QUANTIZERS = {"q8": quantize_q8, "q4": quantize_q4}


def write_variant(src, dtype):
    """Writes `src`'s `dtype` variant beside it; returns its path, or None where the graph has
    nothing that format quantizes."""
    model = QUANTIZERS[dtype](onnx.load(src))
    if model is None:
        return None
    dst = src[: -len(".onnx")] + SUFFIXES[dtype] + ".onnx"
    data = dst + "_data"
    if os.path.exists(data):
        os.remove(data)  # onnx appends to an existing data file
    if sum(i.ByteSize() for i in model.graph.initializer) > EXTERNAL_DATA_BYTES:
        onnx.save_model(model, dst, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(data), size_threshold=1024)
    else:
        onnx.save_model(model, dst)
    onnx.checker.check_model(dst)
    return dst



def write_variants(onnx_dir, dtypes=tuple(QUANTIZERS), graphs=GRAPHS, log=print):
    """Writes each graph's `dtypes` variants beside its fp32 file in `onnx_dir`."""
    for graph in graphs:
        src = os.path.join(onnx_dir, f"{graph}.onnx")
        if not os.path.exists(src):
            sys.exit(f"{src} does not exist: the fp32 graphs are what this script quantizes")
        for dtype in dtypes:
            dst = write_variant(src, dtype)
            if dst:
                size = os.path.getsize(dst) + (os.path.getsize(dst + "_data") if os.path.exists(dst + "_data") else 0)
                log(f"wrote onnx/{os.path.basename(dst)} {size / 1e6:.2f} MB")
            else:
                log(f"onnx/{graph}.onnx has nothing {dtype} quantizes: its fp32 file serves")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--dtype", default="q8,q4", help="variants to write, comma-separated: q8, q4 (default both)")
    parser.add_argument("--graph", action="append", choices=GRAPHS, help="graphs to quantize (default: all three)")
    args = parser.parse_args()
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    unknown = [d for d in dtypes if d not in QUANTIZERS]
    if unknown:
        parser.error(f"unknown dtype {', '.join(unknown)}; this script writes {', '.join(QUANTIZERS)}")
    write_variants(os.path.join(args.model_dir, "onnx"), dtypes, args.graph or GRAPHS)


if __name__ == "__main__":
    main()
