"""A graph with a float16 interface over its float32 arithmetic: every float32 graph input and
output becomes float16, with a Cast beside it. This is the interface of fp16 and q4f16 exports
(float16 pixel values, embeddings, key/value cache and logits), given to a graph whose weights
and arithmetic stay as they are, so that only the rounding at the interface differs."""

from onnx import TensorProto, helper


def rename_uses(graph, old, new):
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]


def to_float16_io(model):
    """`model`, rewritten in place: float16 at its float inputs and outputs, float32 inside."""
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
