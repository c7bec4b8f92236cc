/**
 * A one-node ONNX model, encoded by hand: what the machine-bounds probes run through
 * onnxruntime, so that a bound is measured by the same kernels and thread pool as the decoder.
 * Only the few ModelProto fields such a graph needs are written (src/model/onnx/proto.ts).
 */
import { DATA_TYPE, Writer } from "../../src/model/onnx/proto.ts";

export interface GraphTensor {
  name: string;
  /** Sizes; a string is a symbolic (free) dimension. */
  dims: readonly (number | string)[];
}

export interface Initializer {
  name: string;
  dims: readonly number[];
  data: Float32Array | Int8Array | Uint8Array;
}

function dataType(data: Initializer["data"]): number {
  if (data instanceof Float32Array) return DATA_TYPE.float;
  return data instanceof Int8Array ? DATA_TYPE.int8 : DATA_TYPE.uint8;
}

export interface OneNodeGraph {
  op: string;
  inputs: readonly GraphTensor[];
  initializers?: readonly Initializer[];
  outputs: readonly GraphTensor[];
  /** Integer attributes of the node. */
  attributes?: Record<string, number>;
  /** The operator's domain: "" (ONNX's own) or com.microsoft (onnxruntime's contrib operators). */
  domain?: "" | "com.microsoft";
}

function valueInfo(t: GraphTensor): Writer {
  const shape = new Writer();
  for (const d of t.dims) shape.message(1, typeof d === "number" ? new Writer().int(1, d) : new Writer().string(2, d));
  const tensorType = new Writer().int(1, DATA_TYPE.float).message(2, shape);
  return new Writer().string(1, t.name).message(2, new Writer().message(1, tensorType));
}

/** A graph of one operator with float32 inputs and outputs, opset 17, as ModelProto bytes for InferenceSession.create. */
export function oneNodeModel(g: OneNodeGraph): Uint8Array {
  const node = new Writer();
  for (const t of [...g.inputs, ...(g.initializers ?? [])]) node.string(1, t.name);
  for (const t of g.outputs) node.string(2, t.name);
  node.string(3, "probe").string(4, g.op);
  for (const [name, value] of Object.entries(g.attributes ?? {})) {
    node.message(5, new Writer().string(1, name).int(20, 2 /* INT */).int(3, value));
  }
  if (g.domain) node.string(7, g.domain);
  const graph = new Writer().message(1, node).string(2, "probe");
  for (const init of g.initializers ?? []) {
    graph.message(
      5,
      new Writer()
        .packed(1, init.dims)
        .int(2, dataType(init.data))
        .string(8, init.name)
        .bytes(9, new Uint8Array(init.data.buffer, init.data.byteOffset, init.data.byteLength)),
    );
  }
  for (const t of g.inputs) graph.message(11, valueInfo(t));
  for (const t of g.outputs) graph.message(12, valueInfo(t));
  const model = new Writer().int(1, 8).message(8, new Writer().string(1, "").int(2, 17));
  if (g.domain) model.message(8, new Writer().string(1, g.domain).int(2, 1));
  return model.message(7, graph).finish();
}
