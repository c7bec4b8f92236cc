/**
 * Dynamic int8 graphs (the published `_quantized`, `_int8` and `_uint8` files) rewritten at
 * load so that each row's activations are quantized on their own. onnxruntime's dynamic
 * quantization writes `DynamicQuantizeLinear(x) -> MatMulInteger -> Cast -> Mul(x_scale ·
 * w_scale)`, and DynamicQuantizeLinear takes one scale for the whole tensor: every row shares it, so
 * a sequence's logits depend on the sequences decoded beside it and greedy output can change
 * with the batch. Here each such DynamicQuantizeLinear becomes the same quantization per row
 * (the last axis): symmetric, scale = max|row| / 127, stored as uint8 with zero point 128, so
 * MatMulInteger still runs onnxruntime's uint8 × int8 kernels (AMX, VNNI) and its scale
 * broadcasts through the Mul that follows. Standard ops only:
 *
 *   range = Max(ReduceMax(Abs(x), last axis), tiny)     q = Cast<uint8>(x · (127 / range) + 128.5)
 *   scale = range / 127                                  zero point = 128
 *
 * `+ 128.5` then Cast's truncation rounds half up; |x · 127 / range| ≤ 127, so q stays in
 * [1, 255] and no clip is needed. Nothing else in the graph changes. onnxruntime has no single
 * operator for this: QuantizeLinear refuses a per-row scale with a scalar zero point, and
 * MatMulNBits with 8 bits, which quantizes per row and block, ran at about a third of
 * MatMulInteger's rate at a vision encoder's shapes.
 */
import {
  ATTRIBUTE,
  bytesOf,
  DATA_TYPE,
  GRAPH,
  MODEL,
  NODE,
  type NodeView,
  nodeMessage,
  opsetVersion,
  readFields,
  readNode,
  tensorMessage,
  Writer,
} from "./proto.ts";

const PREFIX = "glance.per_row_int8";
const CONSTANTS = {
  tiny: `${PREFIX}.tiny`,
  levels: `${PREFIX}.127`,
  offset: `${PREFIX}.128_5`,
  lastAxis: `${PREFIX}.last_axis`,
};

function float32(x: number): Uint8Array {
  return new Uint8Array(Float32Array.of(x).buffer);
}

function constantTensors(reduceAxesAsInput: boolean): Writer[] {
  const tensors = [
    tensorMessage(CONSTANTS.tiny, DATA_TYPE.float, [], float32(1e-12)),
    tensorMessage(CONSTANTS.levels, DATA_TYPE.float, [], float32(127)),
    tensorMessage(CONSTANTS.offset, DATA_TYPE.float, [], float32(128.5)),
  ];
  if (reduceAxesAsInput)
    tensors.push(tensorMessage(CONSTANTS.lastAxis, DATA_TYPE.int64, [1], new Uint8Array(BigInt64Array.of(-1n).buffer)));
  return tensors;
}

/**
 * Whether a DynamicQuantizeLinear's outputs go where the rewrite keeps them valid: the
 * quantized tensor and zero point into MatMulInteger's A side only, the scale into Mul only
 * (the product with the weight's scales). A graph already fused into onnxruntime's contrib
 * operators, which take a scalar scale, is left as it is.
 */
function rewritable(dql: NodeView, consumers: Map<string, { node: NodeView; index: number }[]>): boolean {
  const [q, scale, zeroPoint] = dql.outputs;
  if (!q || !scale || !zeroPoint) return false;
  const all = (name: string, ok: (c: { node: NodeView; index: number }) => boolean) => (consumers.get(name) ?? []).every(ok);
  return (
    all(q, (c) => c.node.opType === "MatMulInteger" && c.index === 0) &&
    all(zeroPoint, (c) => c.node.opType === "MatMulInteger" && c.index === 2) &&
    all(scale, (c) => c.node.opType === "Mul")
  );
}

function perRowNodes(dql: NodeView, reduceAxesAsInput: boolean): Writer[] {
  const x = dql.inputs[0]!;
  const [q, scale] = dql.outputs as [string, string, string];
  const t = (name: string) => `${q}/${PREFIX}/${name}`;
  const node = (opType: string, inputs: string[], outputs: string[], attributes = {}) =>
    nodeMessage({ opType, inputs, outputs, name: `${outputs[0]}/node`, attributes });
  return [
    node("Abs", [x], [t("abs")]),
    reduceAxesAsInput
      ? node("ReduceMax", [t("abs"), CONSTANTS.lastAxis], [t("max")], { keepdims: 1 })
      : node("ReduceMax", [t("abs")], [t("max")], { axes: [-1], keepdims: 1 }),
    node("Max", [t("max"), CONSTANTS.tiny], [t("range")]),
    node("Div", [CONSTANTS.levels, t("range")], [t("inverse")]),
    node("Mul", [x, t("inverse")], [t("scaled")]),
    node("Add", [t("scaled"), CONSTANTS.offset], [t("shifted")]),
    node("Cast", [t("shifted")], [q], { to: DATA_TYPE.uint8 }),
    node("Div", [t("range"), CONSTANTS.levels], [scale]),
  ];
}

/** One graph rewritten (subgraphs included); `top` gets the shared constants. */
function rewriteGraph(graph: Uint8Array, reduceAxesAsInput: boolean, top: boolean): { graph: Uint8Array; rewritten: number } {
  const fields = readFields(graph);
  const nodes = new Map(fields.filter((f) => f.num === GRAPH.node).map((f) => [f, readNode(bytesOf(f))]));
  const consumers = new Map<string, { node: NodeView; index: number }[]>();
  for (const node of nodes.values()) {
    node.inputs.forEach((name, index) => {
      const list = consumers.get(name);
      if (list) list.push({ node, index });
      else consumers.set(name, [{ node, index }]);
    });
  }
  let rewritten = 0;
  const out = new Writer();
  const zeroPoints: Writer[] = [];
  for (const f of fields) {
    const node = nodes.get(f);
    if (!node) {
      out.raw(f);
      continue;
    }
    if (node.opType === "DynamicQuantizeLinear" && !node.domain && rewritable(node, consumers)) {
      for (const n of perRowNodes(node, reduceAxesAsInput)) out.message(GRAPH.node, n);
      zeroPoints.push(tensorMessage(node.outputs[2]!, DATA_TYPE.uint8, [], Uint8Array.of(128)));
      rewritten++;
      continue;
    }
    const inner = rewriteSubgraphs(f.value as Uint8Array, reduceAxesAsInput);
    rewritten += inner.rewritten;
    if (inner.rewritten > 0) out.bytes(GRAPH.node, inner.node);
    else out.raw(f);
  }
  if (rewritten === 0) return { graph, rewritten };
  for (const t of zeroPoints) out.message(GRAPH.initializer, t);
  if (top) for (const t of constantTensors(reduceAxesAsInput)) out.message(GRAPH.initializer, t);
  return { graph: out.finish(), rewritten };
}

/** A node whose If or Loop subgraphs hold dynamic int8 MatMuls, with them rewritten. */
function rewriteSubgraphs(nodeBytes: Uint8Array, reduceAxesAsInput: boolean): { node: Uint8Array; rewritten: number } {
  let rewritten = 0;
  const out = new Writer();
  for (const f of readFields(nodeBytes)) {
    if (f.num !== NODE.attribute) {
      out.raw(f);
      continue;
    }
    const attribute = new Writer();
    let changed = false;
    for (const a of readFields(bytesOf(f))) {
      if (a.num === ATTRIBUTE.g || a.num === ATTRIBUTE.graphs) {
        const inner = rewriteGraph(bytesOf(a), reduceAxesAsInput, false);
        rewritten += inner.rewritten;
        if (inner.rewritten > 0) {
          attribute.bytes(a.num, inner.graph);
          changed = true;
          continue;
        }
      }
      attribute.raw(a);
    }
    if (changed) out.message(f.num, attribute);
    else out.raw(f);
  }
  return { node: rewritten > 0 ? out.finish() : nodeBytes, rewritten };
}

/**
 * `model` (ModelProto bytes) with every rewritable DynamicQuantizeLinear quantizing per row;
 * `rewritten` counts them (0: the model is returned as it was).
 */
export function rewritePerRowInt8(model: Uint8Array): { model: Uint8Array; rewritten: number } {
  // ReduceMax takes its axes as an input from opset 18 on, as an attribute before.
  const reduceAxesAsInput = (opsetVersion(model) ?? 0) >= 18;
  const out = new Writer();
  let rewritten = 0;
  for (const f of readFields(model)) {
    if (f.num === MODEL.graph) {
      const result = rewriteGraph(bytesOf(f), reduceAxesAsInput, true);
      rewritten = result.rewritten;
      out.bytes(MODEL.graph, result.graph);
    } else out.raw(f);
  }
  return rewritten > 0 ? { model: out.finish(), rewritten } : { model, rewritten };
}
