"""Writes the quantized variants of a model folder's ONNX graphs in the formats the published
exports use (transformers.js's quantization script and Optimum, both through onnxruntime's
quantization tools), so that Glance is measured and tested on what users download:

    /usr/bin/python3 scripts/models/quantize.py MODEL_DIR [--dtype q8,q4,q4f16] [--graph NAME ...] [--external-data]

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
- q4f16 (`<graph>_q4f16.onnx`), as transformers.js's script writes it (q4 over the fp16 graph):
  a float16 interface (pixel values, embeddings, key/value cache, logits). The source is the
  graph's fp16 variant where the folder has one (`<graph>_fp16.onnx`: float16 weights and
  arithmetic, so MatMulNBits takes float16 activations and scales), else the fp32 graph with
  Casts at its interface (float16_interface.py; MatMulNBits in float32 inside). MatMuls as q4;
  embedding tables become com.microsoft's GatherBlockQuantized: 4-bit blocks of 32 along a row,
  a float16 scale and a 4-bit zero point per block (the published GLM-OCR table's layout, byte
  for byte: 52,740,096 bytes for 59392 x 1536).

onnxruntime's Python package is not a Debian package, so the rewrite is done here with onnx and
numpy, node for node as those tools write it. Graphs whose quantized weights would pass
protobuf's 2 GB, and every graph with --external-data (GLM-OCR's published q4f16 files all
have one), go to one `<name>.onnx_data` beside them, as the fp32 exports do; config.json's
`transformers.js_config.use_external_data_format` then names the file, which is how
transformers.js knows to fetch that data from the hub.
"""

import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from float16_interface import to_float16_io  # noqa: E402

GRAPHS = ["vision_encoder", "embed_tokens", "decoder_model_merged"]
SUFFIXES = {"q8": "_quantized", "q4": "_q4", "q4f16": "_q4f16"}
# What a call writes unless told otherwise: the tiny models' exports ship these.
DEFAULT_DTYPES = ("q8", "q4")
Q4_BLOCK = 32
FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16)
# Weights smaller than this stay float, as onnxruntime's quantizers leave tiny tensors alone.
MIN_WEIGHT_ELEMENTS = 256
EXTERNAL_DATA_BYTES = 1_800_000_000


def constant_weights(graph, op_type, input_index, types=(TensorProto.FLOAT,)):
    """Initializers used only as input `input_index` of `op_type` nodes, 2-D, of a float type in
    `types` and not tiny: the weights a quantizer may replace without changing any other reader."""
    inits = {i.name: i for i in graph.initializer}
    uses = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            uses.setdefault(name, []).append((node.op_type, k))
    out = {}
    for name, init in inits.items():
        if init.data_type not in types or len(init.dims) != 2 or np.prod(init.dims) < MIN_WEIGHT_ELEMENTS:
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


def block_scales(amax, levels, dtype):
    """Scales of blocks whose largest magnitude (or range) is `amax`, rounded to the scales'
    type first so that values are quantized by the scale readers will use; an all-zero block
    (or one too small for float16) takes scale 1."""
    scale = (amax / levels).astype(dtype)
    scale[scale == 0] = 1
    return scale


def blocks_of(rows, width):
    """[R, width] as [R, blocks, 32], zero-padded to whole blocks."""
    blocks = -(-width // Q4_BLOCK)
    out = np.zeros((rows.shape[0], blocks * Q4_BLOCK), np.float32)
    out[:, :width] = rows
    return out.reshape(rows.shape[0], blocks, Q4_BLOCK)


def pack_nibbles(q):
    """Two 4-bit values a byte along the last axis (even length), the even one in the low nibble."""
    return q[..., 0::2] | (q[..., 1::2] << 4)


def int4_blocks(w, scale_type=np.float32):
    """MatMulNBits' 4-bit layout of a [K, N] weight: per output column, blocks of 32 along K
    (K padded with zeros to a whole block), symmetric with zero point 8, two values a byte, the
    even one in the low nibble. Returns B [N, blocks, 16] and scales [N * blocks] of
    `scale_type` (MatMulNBits' scales are of its activations' type)."""
    cols = blocks_of(w.T.astype(np.float32), w.shape[0])
    scale = block_scales(np.abs(cols).max(axis=2), 7.0, scale_type)
    q = (np.clip(np.round(cols / scale.astype(np.float32)[:, :, None]), -8, 7) + 8).astype(np.uint8)
    return pack_nibbles(q), scale.reshape(-1)


def uint4_row_blocks(table):
    """GatherBlockQuantized's 4-bit layout of a [V, D] table (D even), with uint8 data: per row,
    blocks of 32 along D, asymmetric (a block's range from its min to its max, zero included),
    two values a byte, the even one in the low nibble. Returns data [V, D/2], float16 scales
    [V, blocks] and zero points [V, ceil(blocks / 2)], packed as the data."""
    v, d = table.shape
    rows = blocks_of(table.astype(np.float32), d)
    low, high = np.minimum(rows.min(axis=2), 0), np.maximum(rows.max(axis=2), 0)
    scale = block_scales(high - low, 15.0, np.float16)
    s = scale.astype(np.float32)
    zero = np.clip(np.round(-low / s), 0, 15).astype(np.uint8)
    q = np.clip(np.round(rows / s[:, :, None]) + zero[:, :, None], 0, 15).astype(np.uint8)
    blocks = scale.shape[1]
    zeros = np.zeros((v, blocks + blocks % 2), np.uint8)
    zeros[:, :blocks] = zero
    return pack_nibbles(q.reshape(v, -1)[:, :d]), scale, pack_nibbles(zeros)


def matmul_nbits(node, w_name, w, new_inits):
    """`node` (MatMul by the constant `w`) as MatMulNBits, its scales of `w`'s type."""
    packed, scale = int4_blocks(w, w.dtype)
    new_inits += [numpy_helper.from_array(packed, f"{w_name}_Q4"), numpy_helper.from_array(scale, f"{w_name}_scales")]
    return helper.make_node("MatMulNBits", [node.input[0], f"{w_name}_Q4", f"{w_name}_scales"], [node.output[0]],
                            name=f"{node.name or node.output[0]}_Q4", domain="com.microsoft",
                            K=w.shape[0], N=w.shape[1], bits=4, block_size=Q4_BLOCK, accuracy_level=4)


def gather_block_quantized(node, t_name, table, new_inits):
    """`node` (Gather from the constant `table`) as GatherBlockQuantized, whose output is
    float16 (its scales' type); a float32 table's readers get it back as float32 by a Cast."""
    data, scale, zeros = uint4_row_blocks(table)
    new_inits += [numpy_helper.from_array(data, f"{t_name}_Q4"), numpy_helper.from_array(scale, f"{t_name}_scales"),
                  numpy_helper.from_array(zeros, f"{t_name}_zero_points")]
    y = node.output[0]
    half = y if table.dtype == np.float16 else f"{y}_fp16"
    base = node.name or y
    nodes = [helper.make_node("GatherBlockQuantized", [f"{t_name}_Q4", node.input[1], f"{t_name}_scales", f"{t_name}_zero_points"],
                              [half], name=f"{base}_Q4", domain="com.microsoft",
                              gather_axis=0, quantize_axis=1, block_size=Q4_BLOCK, bits=4)]
    if half != y:
        nodes.append(helper.make_node("Cast", [half], [y], to=TensorProto.FLOAT, name=f"{base}_to_fp32"))
    return nodes


def quantize_q4(model, tables_too=False):
    """MatMuls as MatMulNBits; with `tables_too` (q4f16), also Gathers from embedding tables as
    GatherBlockQuantized, and float32 or float16 weights alike."""
    graph = model.graph
    types = FLOATS if tables_too else (TensorProto.FLOAT,)
    weights = constant_weights(graph, "MatMul", 1, types)
    # GatherBlockQuantized with uint8 data gathers rows, of an even width.
    by_column = {n.input[0] for n in graph.node if n.op_type == "Gather" and any(a.name == "axis" and a.i != 0 for a in n.attribute)}
    tables = {n: t for n, t in constant_weights(graph, "Gather", 0, types).items()
              if tables_too and t.dims[1] % 2 == 0 and n not in by_column}
    new_inits, nodes = [], []
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            w_name = node.input[1]
            nodes.append(matmul_nbits(node, w_name, numpy_helper.to_array(weights[w_name]), new_inits))
        elif node.op_type == "Gather" and node.input[0] in tables:
            t_name = node.input[0]
            nodes += gather_block_quantized(node, t_name, numpy_helper.to_array(tables[t_name]), new_inits)
        else:
            nodes.append(node)
    replaced = set(weights) | set(tables)
    model = replace_graph(model, drop_float16_round_trips(nodes, graph), new_inits, replaced, len(replaced))
    if model and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def drop_float16_round_trips(nodes, graph):
    """Drops the Cast to float32 -> Cast to float16 pair (the identity) that a float32 table's
    GatherBlockQuantized makes before a float16 interface's Cast: the GatherBlockQuantized
    writes the second Cast's output itself."""
    outputs = {v.name for v in graph.output}
    readers, maker = {}, {}
    for n in nodes:
        for name in n.input:
            readers.setdefault(name, []).append(n)
        for name in n.output:
            maker[name] = n

    def cast_to(n):
        return next((a.i for a in n.attribute if a.name == "to"), None) if n.op_type == "Cast" else None

    dropped = set()
    for n in nodes:
        gather = maker.get(n.input[0]) if cast_to(n) == TensorProto.FLOAT else None
        if gather is None or gather.op_type != "GatherBlockQuantized" or n.output[0] in outputs:
            continue
        after = readers.get(n.output[0], [])
        if len(after) == 1 and cast_to(after[0]) == TensorProto.FLOAT16:
            gather.output[0] = after[0].output[0]
            dropped.update({id(n), id(after[0])})
    return [n for n in nodes if id(n) not in dropped]


def replace_graph(model, nodes, new_inits, replaced, count):
    graph = model.graph
    kept = [i for i in graph.initializer if i.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    del graph.node[:]
    graph.node.extend(nodes)
    return model if count else None


def quantize_q4f16(model):
    """q4 with the embedding tables too, over a float16-interface graph. Such a graph is written
    even with nothing to quantize: its interface is not the fp32 file's."""
    return quantize_q4(model, tables_too=True) or model


QUANTIZERS = {"q8": quantize_q8, "q4": quantize_q4, "q4f16": quantize_q4f16}


def variant_path(src, suffix):
    return src[: -len(".onnx")] + suffix + ".onnx"


def source_graph(src, dtype):
    """What `dtype` quantizes: the fp32 graph at `src`, or for q4f16 the fp16 variant beside it
    where there is one, else the fp32 graph with a float16 interface."""
    if dtype != "q4f16":
        return onnx.load(src)
    fp16 = variant_path(src, "_fp16")
    return onnx.load(fp16) if os.path.exists(fp16) else to_float16_io(onnx.load(src))


def write_variant(src, dtype, external_data=False):
    """Writes `src`'s `dtype` variant beside it, its weights in `<file>_data` with
    `external_data` or where they pass protobuf's limit; returns its path, or None where the
    graph has nothing that format quantizes."""
    model = QUANTIZERS[dtype](source_graph(src, dtype))
    if model is None:
        return None
    dst = variant_path(src, SUFFIXES[dtype])
    data = dst + "_data"
    if os.path.exists(data):
        os.remove(data)  # onnx appends to an existing data file
    if external_data or sum(i.ByteSize() for i in model.graph.initializer) > EXTERNAL_DATA_BYTES:
        onnx.save_model(model, dst, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(data), size_threshold=1024)
    else:
        onnx.save_model(model, dst)
    onnx.checker.check_model(dst)
    return dst


def register_external_data(model_dir, file_name, has_data):
    """Names `file_name` in config.json's transformers.js_config.use_external_data_format when it
    has an `.onnx_data` file (and drops a stale entry when not): transformers.js fetches a
    graph's external data from the hub only when the config says so. A folder without a
    config.json is left as it is."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    js = config.setdefault("transformers.js_config", {})
    formats = js.get("use_external_data_format")
    if not isinstance(formats, dict):
        if formats not in (None, False):
            return  # a count for every file: nothing per file to say
        formats = {}
    if has_data == bool(formats.get(file_name)):
        return
    if has_data:
        formats[file_name] = 1
    else:
        del formats[file_name]
    js["use_external_data_format"] = formats
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_variants(onnx_dir, dtypes=DEFAULT_DTYPES, graphs=GRAPHS, external_data=False, log=print):
    """Writes each graph's `dtypes` variants beside its fp32 file in `onnx_dir` (each graph's
    weights in an `.onnx_data` file with `external_data`)."""
    for graph in graphs:
        src = os.path.join(onnx_dir, f"{graph}.onnx")
        if not os.path.exists(src):
            sys.exit(f"{src} does not exist: the fp32 graphs are what this script quantizes")
        for dtype in dtypes:
            dst = write_variant(src, dtype, external_data)
            if dst:
                has_data = os.path.exists(dst + "_data")
                register_external_data(os.path.dirname(onnx_dir), os.path.basename(dst), has_data)
                data = f" + {os.path.getsize(dst + '_data') / 1e6:.2f} MB of _data" if has_data else ""
                log(f"wrote onnx/{os.path.basename(dst)} {os.path.getsize(dst) / 1e6:.2f} MB{data}")
            else:
                log(f"onnx/{graph}.onnx has nothing {dtype} quantizes: its fp32 file serves")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--dtype", default=",".join(DEFAULT_DTYPES),
                        help=f"variants to write, comma-separated: {', '.join(QUANTIZERS)} (default {','.join(DEFAULT_DTYPES)})")
    parser.add_argument("--graph", action="append", choices=GRAPHS, help="graphs to quantize (default: all three)")
    parser.add_argument("--external-data", action="store_true",
                        help="every variant's weights in a <file>.onnx_data beside it (default: only past protobuf's 2 GB)")
    args = parser.parse_args()
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    unknown = [d for d in dtypes if d not in QUANTIZERS]
    if unknown:
        parser.error(f"unknown dtype {', '.join(unknown)}; this script writes {', '.join(QUANTIZERS)}")
    write_variants(os.path.join(args.model_dir, "onnx"), dtypes, args.graph or GRAPHS, args.external_data)


if __name__ == "__main__":
    main()
