"""Gives a decoder graph onnx-community's GLM-OCR input `num_logits_to_keep`: a scalar int64 N,
after which the logits are those of the last N positions (every position for 0), and the LM
head multiplies only those. transformers.js feeds it 1 while generating, Glance feeds it 1
always, so a prefill of any length makes one row of logits instead of one per position.

    /usr/bin/python3 scripts/make-model/logits_to_keep.py DECODER.onnx

rewrites the graph in place; its external data (.onnx_data), if any, is left as it is.
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NAME = "num_logits_to_keep"
LM_HEADS = ("MatMul", "MatMulNBits")


def add_num_logits_to_keep(model):
    """`model` with the input, rewritten in place; a graph that has it already is left alone.
    The LM head is the MatMul that makes `logits` (through Casts, as float16 interfaces have
    them); its activations [batch, sequence, hidden] are sliced to the last N positions."""
    graph = model.graph
    if any(i.name == NAME for i in graph.input):
        return model
    makers = {o: n for n in graph.node for o in n.output}
    head = makers.get("logits")
    while head is not None and head.op_type == "Cast":
        head = makers.get(head.input[0])
    if head is None or head.op_type not in LM_HEADS:
        sys.exit("no LM head found: the graph's `logits` output is not made by a MatMul")
    hidden = head.input[0]
    kept = f"{hidden}_last_{NAME}"
    graph.initializer.extend([
        numpy_helper.from_array(np.array([0], "int64"), f"{NAME}_axis"),
        numpy_helper.from_array(np.array([1], "int64"), f"{NAME}_sequence_axis"),
        numpy_helper.from_array(np.array([2**63 - 1], "int64"), f"{NAME}_end"),
    ])
    slice_nodes = [
        helper.make_node("Unsqueeze", [NAME, f"{NAME}_axis"], [f"{NAME}_1d"], name=f"{NAME}_unsqueeze"),
        helper.make_node("Neg", [f"{NAME}_1d"], [f"{NAME}_start"], name=f"{NAME}_neg"),
        helper.make_node("Slice", [hidden, f"{NAME}_start", f"{NAME}_end", f"{NAME}_sequence_axis"], [kept],
                         name=f"{NAME}_slice"),
    ]
    head.input[0] = kept
    at = list(graph.node).index(head)
    nodes = list(graph.node)
    nodes[at:at] = slice_nodes
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.append(helper.make_tensor_value_info(NAME, TensorProto.INT64, []))
    logits = next(o for o in graph.output if o.name == "logits")
    logits.type.tensor_type.shape.dim[1].dim_param = "num_logits"  # no longer the sequence's length
    return model


def rewrite_file(path):
    """Adds the input to the decoder at `path`, reading and writing the graph only."""
    model = add_num_logits_to_keep(onnx.load(path, load_external_data=False))
    onnx.save(model, path)
    onnx.checker.check_model(path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: logits_to_keep.py DECODER.onnx (adds num_logits_to_keep, in place)")
    rewrite_file(sys.argv[1])
