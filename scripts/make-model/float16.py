"""Converts an fp32 decoder graph into the fp16 variant onnx-community exports ship
(decoder_model_merged_fp16.onnx): float16 weights, float16 inputs_embeds, key/value cache and
logits, and float16 arithmetic along the residual stream.

torch 1.13 cannot trace the model in half precision on a CPU (no half matmul or layer norm), so
the exported fp32 graph is rewritten instead. Only what depends on a float graph input (the
embeddings and the cache) turns float16; what is computed from the integer inputs alone (rotary
cos/sin from position_ids, the attention bias from attention_mask) stays float32 and is cast to
float16 where it meets the activations. That is what Hugging Face's models do (rotary in float32,
then cast) and what keeps positions above 2048, which float16 cannot count exactly, correct.
Where onnxruntime's CPU provider has no float16 kernel it inserts casts itself.
"""

import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16


def _elem_types(path):
    """Tensor name -> element type, for every tensor shape inference can type. The graph is read
    without its external data: inference needs the weights' shapes only, and a graph with its
    weights over 2 GB cannot be serialised for it."""
    inferred = shape_inference.infer_shapes(onnx.load(path, load_external_data=False))
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({i.name: i.data_type for i in g.initializer})
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def _half_nodes(graph, types):
    """The nodes that compute in float16: those reached by a float graph input through float
    tensors. Returns their indices and the float tensors they make (all float16 afterwards)."""
    tainted = {v.name for v in graph.input if v.type.tensor_type.elem_type == FLOAT}
    half = set()
    for i, node in enumerate(graph.node):  # ONNX nodes are in topological order
        if any(name in tainted for name in node.input):
            half.add(i)
            tainted.update(o for o in node.output if types.get(o) == FLOAT)
    return half, tainted


def _bypass_weight_identities(graph):
    """torch's export stores equal weights once (every norm starts at 1) and gives each use an
    Identity of that one; reading the weight itself lets it turn float16 once, where each
    Identity's output would be cast at its use."""
    inits = {i.name for i in graph.initializer}
    outputs = {v.name for v in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node
             if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs}
    nodes = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for n in nodes:
        n.input[:] = [alias.get(name, name) for name in n.input]
    del graph.node[:]
    graph.node.extend(nodes)


def to_float16(model, types):
    """The model, rewritten in place as described in the module docstring; `types` is
    _elem_types of its file."""
    graph = model.graph
    _bypass_weight_identities(graph)
    half, tainted = _half_nodes(graph, types)
    inits = {i.name: i for i in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    users = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            users.setdefault(name, set()).add(i)

    converted = {}  # float32 tensor name -> its float16 twin
    casts = []

    def half_of(name):
        """A float16 version of a float32 tensor that a float16 node reads."""
        if name in converted:
            return converted[name]
        only_half = users[name] <= half
        if name in inits:
            # Weights read only by float16 nodes are converted in place: no float32 copy stays.
            t = numpy_helper.from_array(numpy_helper.to_array(inits[name]).astype("float16"), name if only_half else name + "_fp16")
            if only_half:
                inits[name].CopyFrom(t)
            else:
                graph.initializer.append(t)
            converted[name] = t.name
        elif name in constants and only_half:
            attr = next(a for a in constants[name].attribute if a.name == "value")
            attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype("float16"), attr.t.name))
            converted[name] = name
        else:
            casts.append((name, helper.make_node("Cast", [name], [name + "_fp16"], to=FLOAT16, name=name + "_to_fp16")))
            converted[name] = name + "_fp16"
        return converted[name]

    for i in sorted(half):
        node = graph.node[i]
        for j, name in enumerate(node.input):
            if name and name not in tainted and types.get(name) == FLOAT:
                node.input[j] = half_of(name)
        if node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to" and a.i == FLOAT:
                    a.i = FLOAT16

    # Each cast goes right after the node that makes its input, keeping the order topological.
    made_by = {o: k for k, node in enumerate(graph.node) for o in node.output}
    nodes = list(graph.node)
    for name, cast in sorted(casts, key=lambda c: -made_by.get(c[0], -1)):
        nodes.insert(made_by.get(name, -1) + 1, cast)
    del graph.node[:]
    graph.node.extend(nodes)

    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == FLOAT:
            assert value.name in tainted, f"{value.name} does not depend on the activations"
            value.type.tensor_type.elem_type = FLOAT16
    del graph.value_info[:]  # inferred float32 types would now be wrong
    return model


def write_float16(src, dst):
    """Reads the fp32 graph at `src`, writes its fp16 variant to `dst`."""
    model = to_float16(onnx.load(src), _elem_types(src))
    onnx.checker.check_model(model)
    onnx.save(model, dst)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: float16.py SRC.onnx DST.onnx (an fp32 decoder; writes its fp16 variant)")
    write_float16(sys.argv[1], sys.argv[2])
