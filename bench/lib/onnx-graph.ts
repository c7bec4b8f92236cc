/**
 * A one-node ONNX model, encoded by hand: what the machine-bounds probes run through
 * onnxruntime, so that a bound is measured by the same kernels and thread pool as the decoder.
 * Only the few ModelProto fields such a graph needs are written (onnx.proto's field numbers);
 * `onnx` itself is a Python package, and a protobuf schema compiled for five messages would be
 * more code than this.
 */

/** Protobuf wire encoding: varints, length-delimited fields and packed repeated int64. */
class Writer {
  private parts: Uint8Array[] = [];
  private varint(n: number | bigint): void {
    let v = BigInt(n);
    const bytes: number[] = [];
    do {
      let b = Number(v & 0x7fn);
      v >>= 7n;
      if (v > 0n) b |= 0x80;
      bytes.push(b);
    } while (v > 0n);
    this.parts.push(Uint8Array.from(bytes));
  }
  int(field: number, n: number): this {
    this.varint(field << 3);
    this.varint(n);
    return this;
  }
  bytes(field: number, data: Uint8Array): this {
    this.varint((field << 3) | 2);
    this.varint(data.length);
    this.parts.push(data);
    return this;
  }
  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }
  message(field: number, w: Writer): this {
    return this.bytes(field, w.finish());
  }
  packed(field: number, values: readonly number[]): this {
    const inner = new Writer();
    for (const v of values) inner.varint(v);
    return this.bytes(field, inner.finish());
  }
  finish(): Uint8Array {
    return Buffer.concat(this.parts);
  }
}

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
