/**
 * What a batch runs: one item per image, from folders, files or globs with one question or
 * schema for all, or from a JSONL manifest with one of each per line. Everything that can be
 * wrong with the inputs themselves (no images matched, two images with one id, a manifest line
 * that is not JSON, a schema file that does not parse) is a usage error found here, before a
 * model loads or a server is called; an image that is missing or broken is not: it fails on its
 * own line when the run reaches it, so one bad file never stops a run of thousands.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { glob, readdir } from "node:fs/promises";
import path from "node:path";
import { UsageError } from "./usage-error.ts";

/** A JSON Schema as the request carries it: response_format { json_schema { name, schema } }. */
export interface BatchSchema {
  name: string;
  /** The schema as JSON text. */
  schema: string;
}

export interface BatchItem {
  /** Unique within a run: what --resume and --labels match on. */
  id: string;
  /** The image as the input named it, for the output line. */
  image: string;
  /** Where the image is read from. */
  imagePath: string;
  /** The text sent with the image: the question, or a schema run's instruction. */
  question: string;
  schema?: BatchSchema;
}

/** What a schema run asks when it is given no --question. */
export const DEFAULT_SCHEMA_INSTRUCTION = "Answer in JSON.";

/** The files a folder contributes: the formats the server decodes. */
export const IMAGE_EXTENSIONS: ReadonlySet<string> = new Set([".png", ".jpg", ".jpeg", ".webp", ".gif", ".tif", ".tiff", ".avif"]);

const GLOB_MAGIC = /[*?[\]{}]/;

/** A path without its extension, with forward slashes: the same id on every platform. */
const idOf = (relative: string) =>
  relative
    .slice(0, relative.length - path.extname(relative).length)
    .split(path.sep)
    .join("/");

/** The fixed directories a glob starts from: everything before its first segment with a wildcard. */
function globBase(pattern: string): string {
  const segments = pattern.split(/[\\/]/);
  const fixed: string[] = [];
  for (const s of segments.slice(0, -1)) {
    if (GLOB_MAGIC.test(s)) break;
    fixed.push(s);
  }
  if (fixed.length === 1 && fixed[0] === "") return path.sep;
  return fixed.join(path.sep) || ".";
}

interface FoundImage {
  id: string;
  image: string;
}

async function imagesOf(input: string): Promise<FoundImage[]> {
  if (existsSync(input)) {
    if (!statSync(input).isDirectory()) return [{ id: path.basename(input, path.extname(input)), image: input }];
    const entries = await readdir(input, { recursive: true, withFileTypes: true });
    return entries
      .filter((e) => e.isFile() && IMAGE_EXTENSIONS.has(path.extname(e.name).toLowerCase()))
      .map((e) => {
        const relative = path.relative(input, path.join(e.parentPath, e.name));
        return { id: idOf(relative), image: path.join(input, relative) };
      });
  }
  if (!GLOB_MAGIC.test(input)) throw new UsageError(`${input}: no such file or folder`);
  const base = globBase(input);
  const found: FoundImage[] = [];
  for await (const match of glob(input)) {
    if (statSync(match).isFile()) found.push({ id: idOf(path.relative(base, match)), image: match });
  }
  return found;
}

/** Refuses two items with one id, naming both: results and labels could not tell them apart. */
function checkUnique<T extends { id: string }>(items: T[], describe: (item: T) => string): void {
  const seen = new Map<string, T>();
  for (const item of items) {
    const other = seen.get(item.id);
    if (other) throw new UsageError(`${describe(other)} and ${describe(item)} have the same id ${JSON.stringify(item.id)}`);
    seen.set(item.id, item);
  }
}

/** Reads and checks a schema file; its name in requests and results is the file's name without extension. */
export function readSchemaFile(file: string): BatchSchema {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read the schema ${file}: ${(e as Error).message}`);
  }
  return { name: path.basename(file, path.extname(file)), schema: checkedSchema(text, file) };
}

function checkedSchema(text: string, where: string): string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${where}: the schema is not JSON: ${(e as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new UsageError(`${where}: a JSON Schema is an object`);
  // The text as written: the order of `properties` is the order the answer lists them in, and a
  // parse and stringify would move integer-like property names to the front.
  return text;
}

/**
 * The items of folders, image files and globs (Node's fs.glob syntax), sorted by id so that every
 * run goes in the same order. A folder contributes every image under it, at any depth, its id the
 * path relative to the folder without the extension (`cats/001`); a glob's matches are named
 * relative to the glob's fixed prefix the same way; a file named directly is its name without
 * the extension (so a shell-expanded `images/*.png` gives the same ids as the folder `images`).
 */
export async function imageItems(inputs: string[], question: string, schema?: BatchSchema): Promise<BatchItem[]> {
  const found: FoundImage[] = [];
  for (const input of inputs) {
    const images = await imagesOf(input);
    if (images.length === 0) throw new UsageError(`${input}: no images found`);
    found.push(...images);
  }
  checkUnique(found, (f) => f.image);
  return found
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .map((f) => ({ id: f.id, image: f.image, imagePath: path.resolve(f.image), question, ...(schema && { schema }) }));
}

/**
 * The items of a JSONL manifest, in its order: `{"id", "image", "question"}` or
 * `{"id", "image", "schema", "question"?}` per line. Image paths and schema paths are relative to
 * the manifest's folder; a schema is an object inline (named by its `title`, or `schema`) or a
 * path to a file (named by the file). An id may be a number; without one a line's id is its line
 * number, which is stable as long as the manifest is only appended to.
 */
export function manifestItems(file: string): BatchItem[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read the manifest ${file}: ${(e as Error).message}`);
  }
  const dir = path.dirname(file);
  const schemaFiles = new Map<string, BatchSchema>();
  const items: Array<BatchItem & { line: number }> = [];
  text.split("\n").forEach((raw, i) => {
    const line = i + 1;
    const where = `${file}:${line}`;
    if (raw.trim() === "") return;
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(raw);
    } catch (e) {
      throw new UsageError(`${where}: not JSON: ${(e as Error).message}`);
    }
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) throw new UsageError(`${where}: a line is a JSON object`);
    const { id, image, question, schema } = entry;
    if (typeof image !== "string" || image === "") throw new UsageError(`${where}: "image" (a path) is missing`);
    if (id !== undefined && typeof id !== "string" && typeof id !== "number")
      throw new UsageError(`${where}: "id" is a string or a number`);
    if (question !== undefined && typeof question !== "string") throw new UsageError(`${where}: "question" is a string`);
    let itemSchema: BatchSchema | undefined;
    if (typeof schema === "string") {
      const schemaPath = path.resolve(dir, schema);
      itemSchema = schemaFiles.get(schemaPath) ?? readSchemaFile(schemaPath);
      schemaFiles.set(schemaPath, itemSchema);
    } else if (typeof schema === "object" && schema !== null && !Array.isArray(schema)) {
      const title = (schema as { title?: unknown }).title;
      itemSchema = { name: typeof title === "string" && title !== "" ? title : "schema", schema: JSON.stringify(schema) };
    } else if (schema !== undefined) {
      throw new UsageError(`${where}: "schema" is an object or a path to a schema file`);
    }
    if (!itemSchema && !question) throw new UsageError(`${where}: give a "question" or a "schema"`);
    items.push({
      line,
      id: id === undefined ? String(line) : String(id),
      image,
      imagePath: path.resolve(dir, image),
      question: question || DEFAULT_SCHEMA_INSTRUCTION,
      ...(itemSchema && { schema: itemSchema }),
    });
  });
  if (items.length === 0) throw new UsageError(`${file}: the manifest has no lines`);
  checkUnique(items, (item) => `${file}:${item.line}`);
  return items.map(({ line: _, ...item }) => item);
}
