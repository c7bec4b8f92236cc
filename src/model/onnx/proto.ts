/**
 * The few parts of ONNX's protobuf messages (onnx.proto) that Glance reads and writes itself:
 * a graph's nodes, to rewrite some at load (per-row-int8.ts) and to read a file's operators
 * back (tests, the bench), and one-node probe graphs (the bench's machine bounds). Every other
 * field is carried over as its bytes. A protobuf schema compiled for onnx.proto's dozen messages
 * would be more code than this, and onnxruntime-node exposes no graph API.
 */

/** onnx.proto's field numbers, for the messages and fields used here. */
export const MODEL = { opsetImport: 8, graph: 7 } as const;
export const GRAPH = { node: 1, name: 2, initializer: 5, input: 11, output: 12 } as const;
export const NODE = { input: 1, output: 2, name: 3, opType: 4, attribute: 5, domain: 7 } as const;
export const ATTRIBUTE = { name: 1, f: 2, i: 3, g: 6, ints: 8, graphs: 11, type: 20 } as const;
export const ATTRIBUTE_TYPE = { float: 1, int: 2, ints: 7 } as const;
export const TENSOR = { dims: 1, dataType: 2, name: 8, rawData: 9 } as const;
export const DATA_TYPE = { float: 1, uint8: 2, int8: 3, int32: 6, int64: 7 } as const;

const VARINT = 0;
const FIXED64 = 1;
const BYTES = 2;
const FIXED32 = 5;

/** One field of a message as it was encoded: its number, wire type, and value (a varint, or the bytes). */
export interface Field {
  num: number;
  wire: number;
  /** Varints as bigint; length-delimited and fixed fields as their bytes. */
  value: bigint | Uint8Array;
  /** The whole field, tag included, as it was read. */
  raw: Uint8Array;
}

function readVarint(buf: Uint8Array, pos: number): [bigint, number] {
  let value = 0n;
  let shift = 0n;
  for (;;) {
    if (pos >= buf.length) throw new Error("truncated protobuf varint");
    const b = buf[pos++]!;
    value |= BigInt(b & 0x7f) << shift;
    if (b < 0x80) return [value, pos];
    shift += 7n;
  }
}

/** The fields of one message, in order. */
export function readFields(buf: Uint8Array): Field[] {
  const fields: Field[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const start = pos;
    const [tag, afterTag] = readVarint(buf, pos);
    const num = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    let value: bigint | Uint8Array;
    if (wire === VARINT) [value, pos] = readVarint(buf, afterTag);
    else if (wire === BYTES) {
      const [length, at] = readVarint(buf, afterTag);
      pos = at + Number(length);
      value = buf.subarray(at, pos);
    } else if (wire === FIXED64 || wire === FIXED32) {
      pos = afterTag + (wire === FIXED64 ? 8 : 4);
      value = buf.subarray(afterTag, pos);
    } else throw new Error(`unsupported protobuf wire type ${wire}`);
    if (pos > buf.length) throw new Error("truncated protobuf message");
    fields.push({ num, wire, value, raw: buf.subarray(start, pos) });
  }
  return fields;
}

const decoder = new TextDecoder();
export const text = (f: Field): string => decoder.decode(f.value as Uint8Array);
export const bytesOf = (f: Field): Uint8Array => f.value as Uint8Array;

/** Protobuf's wire encoding, appended field by field. */
export class Writer {
  private parts: Uint8Array[] = [];
  private varint(n: number | bigint): void {
    let v = BigInt.asUintN(64, BigInt(n));
    const bytes: number[] = [];
    do {
      let b = Number(v & 0x7fn);
      v >>= 7n;
      if (v > 0n) b |= 0x80;
      bytes.push(b);
    } while (v > 0n);
    this.parts.push(Uint8Array.from(bytes));
  }
  int(field: number, n: number | bigint): this {
    this.varint(field << 3);
    this.varint(n);
    return this;
  }
  float(field: number, x: number): this {
    this.varint((field << 3) | FIXED32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, x, true);
    this.parts.push(b);
    return this;
  }
  bytes(field: number, data: Uint8Array): this {
    this.varint((field << 3) | BYTES);
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
  packed(field: number, values: readonly (number | bigint)[]): this {
    const inner = new Writer();
    for (const v of values) inner.varint(v);
    return this.bytes(field, inner.finish());
  }
  /** A field copied as it was read. */
  raw(field: Field): this {
    this.parts.push(field.raw);
    return this;
  }
  finish(): Uint8Array {
    return Buffer.concat(this.parts);
  }
}

/** A node as the rewrites need it: its wiring, and its fields to copy. */
export interface NodeView {
  opType: string;
  domain: string;
  name: string;
  inputs: string[];
  outputs: string[];
  fields: Field[];
}

export function readNode(buf: Uint8Array): NodeView {
  const fields = readFields(buf);
  const strings = (num: number) => fields.filter((f) => f.num === num).map(text);
  return {
    opType: strings(NODE.opType)[0] ?? "",
    domain: strings(NODE.domain)[0] ?? "",
    name: strings(NODE.name)[0] ?? "",
    inputs: strings(NODE.input),
    outputs: strings(NODE.output),
    fields,
  };
}

/** An integer or integer-list attribute, as written into a new node. */
export type IntAttributes = Record<string, number | readonly number[]>;

export function nodeMessage(node: {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name?: string;
  domain?: string;
  attributes?: IntAttributes;
}): Writer {
  const w = new Writer();
  for (const name of node.inputs) w.string(NODE.input, name);
  for (const name of node.outputs) w.string(NODE.output, name);
  if (node.name) w.string(NODE.name, node.name);
  w.string(NODE.opType, node.opType);
  for (const [name, value] of Object.entries(node.attributes ?? {})) {
    const a = new Writer().string(ATTRIBUTE.name, name);
    if (typeof value === "number") a.int(ATTRIBUTE.i, value).int(ATTRIBUTE.type, ATTRIBUTE_TYPE.int);
    else {
      for (const v of value) a.int(ATTRIBUTE.ints, v);
      a.int(ATTRIBUTE.type, ATTRIBUTE_TYPE.ints);
    }
    w.message(NODE.attribute, a);
  }
  if (node.domain) w.string(NODE.domain, node.domain);
  return w;
}

/** A constant tensor of raw little-endian data. */
export function tensorMessage(name: string, dataType: number, dims: readonly number[], data: Uint8Array): Writer {
  const w = new Writer();
  if (dims.length > 0) w.packed(TENSOR.dims, dims);
  return w.int(TENSOR.dataType, dataType).string(TENSOR.name, name).bytes(TENSOR.rawData, data);
}

/** The opset version a model imports for `domain` ("" is ONNX's own). */
export function opsetVersion(model: Uint8Array, domain = ""): number | undefined {
  for (const f of readFields(model)) {
    if (f.num !== MODEL.opsetImport) continue;
    const inner = readFields(bytesOf(f));
    const d = inner.find((x) => x.num === 1);
    if ((d ? text(d) : "") === domain) return Number(inner.find((x) => x.num === 2)?.value ?? 0n);
  }
  return undefined;
}

/** The subgraphs a node's attributes hold (If's branches, Loop's body). */
function subgraphs(node: NodeView): Uint8Array[] {
  return node.fields
    .filter((f) => f.num === NODE.attribute)
    .flatMap((f) => readFields(bytesOf(f)).filter((a) => a.num === ATTRIBUTE.g || a.num === ATTRIBUTE.graphs))
    .map(bytesOf);
}

/** Every node's operator type, subgraphs included, with how many times it occurs. */
export function operatorCounts(model: Uint8Array): Map<string, number> {
  const counts = new Map<string, number>();
  const visit = (graph: Uint8Array) => {
    for (const f of readFields(graph)) {
      if (f.num !== GRAPH.node) continue;
      const node = readNode(bytesOf(f));
      const key = node.domain && node.domain !== "ai.onnx" ? `${node.domain}.${node.opType}` : node.opType;
      counts.set(key, (counts.get(key) ?? 0) + 1);
      for (const g of subgraphs(node)) visit(g);
    }
  };
  const graph = readFields(model).find((f) => f.num === MODEL.graph);
  if (graph) visit(bytesOf(graph));
  return counts;
}
