/**
 * A model folder holding exactly the ONNX variants a test names, whichever variants the source
 * folder ships: the source's top-level files and fp32 graphs, and each variant a copy of its
 * graph's fp32 file. A copy gets its own doc_string (a field appended to the ModelProto, which a
 * reader takes over the first), so that no two files share bytes: a hub stand-in names blobs by
 * their sha256.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { DTYPE_SUFFIXES, type Dtype, GRAPH_NAMES, GRAPHS, type Graph, graphFile } from "../../src/model/graph-dtypes.ts";

/** Protobuf's varint. */
function varint(n: number): number[] {
  const bytes: number[] = [];
  for (; n >= 0x80; n >>>= 7) bytes.push((n & 0x7f) | 0x80);
  return [...bytes, n];
}

/** ModelProto field 6 (doc_string), length-delimited. */
function docString(text: string): Buffer {
  const utf8 = Buffer.from(text);
  return Buffer.from([(6 << 3) | 2, ...varint(utf8.length), ...utf8]);
}

export interface VariantFolder {
  dir: string;
  remove(): void;
}

/** `variants`: each graph's variants beside its fp32 file, e.g. `{ decoder: ["q8"] }`. */
export function variantFolder(source: string, variants: Partial<Record<Graph, Dtype[]>>): VariantFolder {
  // Named as the source is, since the folder's name is the model's id.
  const parent = mkdtempSync(path.join(tmpdir(), "glance-variants-"));
  const dir = path.join(parent, path.basename(source));
  mkdirSync(path.join(dir, "onnx"), { recursive: true });
  for (const name of readdirSync(source)) {
    if (statSync(path.join(source, name)).isFile()) copyFileSync(path.join(source, name), path.join(dir, name));
  }
  for (const graph of GRAPHS) {
    const fp32 = graphFile(graph, "fp32");
    copyFileSync(path.join(source, fp32), path.join(dir, fp32));
    for (const dtype of variants[graph] ?? []) {
      const note = docString(`${GRAPH_NAMES[graph]}${DTYPE_SUFFIXES[dtype]}: a copy of the fp32 graph for a test`);
      writeFileSync(path.join(dir, graphFile(graph, dtype)), Buffer.concat([readFileSync(path.join(source, fp32)), note]));
    }
  }
  return { dir, remove: () => rmSync(parent, { recursive: true, force: true }) };
}
