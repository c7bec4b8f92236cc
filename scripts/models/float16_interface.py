"""A graph with a float16 interface over its float32 arithmetic: every float32 graph input and
output becomes float16, with a Cast beside it. This is the interface of fp16 and q4f16 exports
(float16 pixel values, embeddings, key/value cache and logits), given to a graph whose weights
and arithmetic stay as they are, so that only the rounding at the interface differs."""

from onnx import TensorProto, helper


def rename_uses(graph, old, new):
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]


def _float16_edge(graph, values):
    """The float32 `values` (graph inputs or outputs) turned float16, each renamed inside the graph
    to `<name>__float32`; returns (outer name, inner name) pairs for the Casts between them."""
    pairs = []
    for value in values:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = value.name + "__float32"
        rename_uses(graph, value.name, inner)
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
        pairs.append((value.name, inner))
    return pairs


def to_float16_io(model):
    """`model`, rewritten in place: float16 at its float inputs and outputs, float32 inside."""
    graph = model.graph
    casts_in = [helper.make_node("Cast", [outer], [inner], to=TensorProto.FLOAT)
                for outer, inner in _float16_edge(graph, graph.input)]
    casts_out = [helper.make_node("Cast", [inner], [outer], to=TensorProto.FLOAT16)
                 for outer, inner in _float16_edge(graph, graph.output)]
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    return model
