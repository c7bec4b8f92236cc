"""Writes a float16-interface variant of a model folder's ONNX graphs: every float32 graph input
and output becomes float16, with a Cast beside it, and the computation stays float32.

    /usr/bin/python3 scripts/models/float16-io.py SRC_DIR DST_DIR

DST_DIR gets SRC_DIR's configs and onnx/{vision_encoder,embed_tokens,decoder_model_merged}_fp16.onnx.
This is the interface of fp16 and q4f16 exports (float16 pixel values, embeddings, key/value cache
and logits), which test/float16-io.test.ts runs Glance on without shipping a second model: the
weights and the arithmetic are the fp32 model's, so only the rounding at the interface differs.
"""
import os
import shutil
import sys

import onnx
from onnx import TensorProto, helper

GRAPHS = ["vision_encoder", "embed_tokens", "decoder_model_merged"]


def rename_uses(graph, old, new):
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]


def to_float16_io(model):
    graph = model.graph
    casts_in, casts_out = [], []
    for value in graph.input:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = value.name + "__float32"
        rename_uses(graph, value.name, inner)
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
        casts_in.append(helper.make_node("Cast", [value.name], [inner], to=TensorProto.FLOAT))
    for value in graph.output:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = value.name + "__float32"
        rename_uses(graph, value.name, inner)
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
        casts_out.append(helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT16))
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def main(src, dst):
    os.makedirs(os.path.join(dst, "onnx"), exist_ok=True)
    for name in os.listdir(src):
        if name.endswith(".json"):
            shutil.copy(os.path.join(src, name), dst)
    for name in GRAPHS:
        model = to_float16_io(onnx.load(os.path.join(src, "onnx", name + ".onnx")))
        onnx.checker.check_model(model)
        onnx.save(model, os.path.join(dst, "onnx", name + "_fp16.onnx"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
