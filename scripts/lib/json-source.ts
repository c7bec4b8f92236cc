/**
 * JSON read as written, for the MaskBench runner: object members in their order (JSON.parse
 * puts integer-like keys first, and a schema's property order is its output order) and numbers
 * as their text. From that tree, the compact text a schema is sent as, and the text Python's
 * `json.dumps(value, ensure_ascii=False)` writes, which is how MaskBench serialises its instances.
 * The engine's ordered-json.ts keeps member order too, but reads numbers as doubles: Python's
 * output depends on whether a number was written as an integer, and on every digit of a big one.
 */

export type JsonNode =
  | { type: "object"; members: Array<[string, JsonNode]> }
  | { type: "array"; items: JsonNode[] }
  | { type: "string"; value: string }
  | { type: "number"; text: string }
  | { type: "literal"; text: "true" | "false" | "null" };

/** Parses JSON text; throws SyntaxError with the offset where it is not JSON. */
export function parseJsonSource(text: string): JsonNode {
  let i = 0;
  const fail = (what: string): never => {
    throw new SyntaxError(`${what} at offset ${i}`);
  };
  const space = () => {
    while (i < text.length && " \t\n\r".includes(text[i]!)) i++;
  };
  const value = (): JsonNode => {
    space();
    const c = text[i];
    if (c === "{") {
      i++;
      const members: Array<[string, JsonNode]> = [];
      space();
      if (text[i] === "}") {
        i++;
        return { type: "object", members };
      }
      for (;;) {
        space();
        if (text[i] !== '"') fail("a member name expected");
        const name = string();
        space();
        if (text[i++] !== ":") fail("':' expected");
        members.push([name, value()]);
        space();
        const next = text[i++];
        if (next === "}") return { type: "object", members };
        if (next !== ",") fail("',' or '}' expected");
      }
    }
    if (c === "[") {
      i++;
      const items: JsonNode[] = [];
      space();
      if (text[i] === "]") {
        i++;
        return { type: "array", items };
      }
      for (;;) {
        items.push(value());
        space();
        const next = text[i++];
        if (next === "]") return { type: "array", items };
        if (next !== ",") fail("',' or ']' expected");
      }
    }
    if (c === '"') return { type: "string", value: string() };
    for (const literal of ["true", "false", "null"] as const) {
      if (text.startsWith(literal, i)) {
        i += literal.length;
        return { type: "literal", text: literal };
      }
    }
    const number = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (!number) return fail("a value expected");
    i += number[0].length;
    return { type: "number", text: number[0] };
  };
  const string = (): string => {
    const start = i;
    i++;
    while (text[i] !== '"') {
      if (i >= text.length) fail("an unterminated string");
      i += text[i] === "\\" ? 2 : 1;
    }
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const root = value();
  space();
  if (i < text.length) fail("text after the value");
  return root;
}

/** The member `name` of an object node, or undefined. */
export function member(node: JsonNode, name: string): JsonNode | undefined {
  return node.type === "object" ? node.members.find(([key]) => key === name)?.[1] : undefined;
}

/** Compact JSON in the source's member order, numbers as written. */
export function compactJson(node: JsonNode): string {
  switch (node.type) {
    case "object":
      return `{${node.members.map(([key, v]) => `${JSON.stringify(key)}:${compactJson(v)}`).join(",")}}`;
    case "array":
      return `[${node.items.map(compactJson).join(",")}]`;
    case "string":
      return JSON.stringify(node.value);
    case "number":
    case "literal":
      return node.text;
  }
}

/**
 * `json.dumps(json.loads(source), ensure_ascii=False)`: separators ", " and ": ", non-ASCII as
 * is, integers as written, other numbers as Python's float repr. Python keeps the last of a
 * repeated member name, in the place of the first.
 */
export function pythonDumps(node: JsonNode): string {
  switch (node.type) {
    case "object": {
      const members = new Map<string, JsonNode>();
      for (const [key, v] of node.members) members.set(key, v);
      return `{${[...members].map(([key, v]) => `${pythonString(key)}: ${pythonDumps(v)}`).join(", ")}}`;
    }
    case "array":
      return `[${node.items.map(pythonDumps).join(", ")}]`;
    case "string":
      return pythonString(node.value);
    case "literal":
      return node.text;
    case "number":
      return /[.eE]/.test(node.text) ? pythonFloat(Number(node.text)) : BigInt(node.text).toString();
  }
}

/** Python's json string escapes: the two-character ones, \u00XX for other controls, the rest as is (lone surrogates escaped). */
function pythonString(value: string): string {
  let out = '"';
  for (let k = 0; k < value.length; k++) {
    const c = value.charCodeAt(k);
    const short = { 34: '\\"', 92: "\\\\", 10: "\\n", 13: "\\r", 9: "\\t", 8: "\\b", 12: "\\f" }[c];
    if (short) out += short;
    else if (c < 0x20) out += `\\u${c.toString(16).padStart(4, "0")}`;
    else if (c >= 0xd800 && c <= 0xdbff && value.charCodeAt(k + 1) >= 0xdc00 && value.charCodeAt(k + 1) <= 0xdfff) {
      out += value.slice(k, k + 2);
      k++;
    } else if (c >= 0xd800 && c <= 0xdfff) out += `\\u${c.toString(16).padStart(4, "0")}`;
    else out += value[k];
  }
  return `${out}"`;
}

/** Python's repr of a float: the shortest digits that read back, fixed from 1e-4 to below 1e16, else d.ddde±XX. */
export function pythonFloat(x: number): string {
  if (Object.is(x, -0)) return "-0.0";
  if (x === 0) return "0.0";
  if (!Number.isFinite(x)) return x > 0 ? "Infinity" : x < 0 ? "-Infinity" : "NaN";
  const [mantissa, exp] = x.toExponential().split("e") as [string, string];
  const e = Number(exp);
  const negative = mantissa.startsWith("-");
  const digits = mantissa.replace("-", "").replace(".", "");
  const sign = negative ? "-" : "";
  if (e < -4 || e >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  }
  if (e < 0) return `${sign}0.${"0".repeat(-e - 1)}${digits}`;
  const whole = digits.slice(0, e + 1).padEnd(e + 1, "0");
  const fraction = digits.slice(e + 1);
  return `${sign}${whole}.${fraction === "" ? "0" : fraction}`;
}
