/**
 * A one-node ONNX model, encoded by hand: what the machine-bounds probes run through
 * onnxruntime, so that a bound is measured by the same kernels and thread pool as the decoder.
 * Only the few ModelProto fields such a graph needs are written (src/model/onnx/proto.ts).
 */
import { Writer } from "../../src/model/onnx/proto.ts";

const FLOAT = 1;

export interface GraphTensor {
  name: string;
  /** Sizes; a string is a symbolic (free) dimension. */
  dims: readonly (number | string)[];
}

export interface Initializer {
  name: string;
  dims: readonly number[];
  data: Float32Array;
}

export interface OneNodeGraph {
  op: string;
  inputs: readonly GraphTensor[];
  initializers?: readonly Initializer[];
  outputs: readonly GraphTensor[];
  /** Integer attributes of the node. */
  attributes?: Record<string, number>;
}

function valueInfo(t: GraphTensor): Writer {
  const shape = new Writer();
  for (const d of t.dims) shape.message(1, typeof d === "number" ? new Writer().int(1, d) : new Writer().string(2, d));
  const tensorType = new Writer().int(1, FLOAT).message(2, shape);
  return new Writer().string(1, t.name).message(2, new Writer().message(1, tensorType));
}

/** A float32 graph of one operator, opset 17, as ModelProto bytes for InferenceSession.create. */
export function oneNodeModel(g: OneNodeGraph): Uint8Array {
  const node = new Writer();
  for (const t of [...g.inputs, ...(g.initializers ?? [])]) node.string(1, t.name);
  for (const t of g.outputs) node.string(2, t.name);
  node.string(3, "probe").string(4, g.op);
  for (const [name, value] of Object.entries(g.attributes ?? {})) {
    node.message(5, new Writer().string(1, name).int(20, 2 /* INT */).int(3, value));
  }
  const graph = new Writer().message(1, node).string(2, "probe");
  for (const init of g.initializers ?? []) {
    graph.message(
      5,
      new Writer()
        .packed(1, init.dims)
        .int(2, FLOAT)
        .string(8, init.name)
        .bytes(9, new Uint8Array(init.data.buffer, init.data.byteOffset, init.data.byteLength)),
    );
  }
  for (const t of g.inputs) graph.message(11, valueInfo(t));
  for (const t of g.outputs) graph.message(12, valueInfo(t));
  return new Writer().int(1, 8).message(8, new Writer().string(1, "").int(2, 17)).message(7, graph).finish();
}
