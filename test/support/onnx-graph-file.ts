/** A graph file's top-level nodes and constants, read with src/model/onnx/proto.ts, for tests that check what a quantizer wrote. */
import { readFileSync } from "node:fs";
import { bytesOf, GRAPH, MODEL, type NodeView, readFields, readNode, TENSOR, text } from "../../src/model/onnx/proto.ts";

export interface GraphFile {
  nodes: NodeView[];
  /** Each initializer's name and data type (onnx.proto's TensorProto.DataType). */
  initializerTypes: Map<string, number>;
}

export function readGraphFile(file: string): GraphFile {
  const graph = readFields(bytesOf(readFields(readFileSync(file)).find((f) => f.num === MODEL.graph)!));
  const initializerTypes = new Map<string, number>();
  for (const f of graph.filter((g) => g.num === GRAPH.initializer)) {
    const tensor = readFields(bytesOf(f));
    initializerTypes.set(text(tensor.find((t) => t.num === TENSOR.name)!), Number(tensor.find((t) => t.num === TENSOR.dataType)!.value));
  }
  return { nodes: graph.filter((f) => f.num === GRAPH.node).map((f) => readNode(bytesOf(f))), initializerTypes };
}

/** MatMuls whose second input is a constant: the weight MatMuls a quantizer replaces. */
export function weightMatMuls({ nodes, initializerTypes }: GraphFile): number {
  return nodes.filter((n) => n.opType === "MatMul" && initializerTypes.has(n.inputs[1]!)).length;
}
