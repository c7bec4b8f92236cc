/**
 * Sensitive-data redaction: the built-in kinds and their checksums, the operator's own patterns,
 * streams split at every place (joined, they give what the whole text gives, and no delta shows
 * a value), log lines through pino, and end to end: planted values in the prompt, the request
 * id and the model's answer (forced by a regex response format) never reach the logs, the audit
 * log, or with --redact-output the client, over gRPC, Connect, the OpenAI API streamed and
 * whole, and Extract.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { InferenceService, Role } from "../gen/glance/v1/inference_pb.js";
import { BUILT_IN_KINDS, luhn, validBankCard, validIdCard } from "../src/privacy/kinds.ts";
import { redactingLogger } from "../src/privacy/redacting-log.ts";
import { readPatternsFile, redactionKinds } from "../src/privacy/redaction-kinds.ts";
import { createRedactor } from "../src/privacy/redactor.ts";
import { startTestServer, type TestServer } from "./support/test-server.ts";

/** Values that must never show: a valid ID (check character X, and a digit), a mobile number written three ways, Luhn-valid cards, emails. */
const ID = "11010519491231002X";
const ID2 = "440304198503124516";
const PHONE = "13812345678";
const CARD = "6222021234567894";
const CARD19 = "6217000123456789019";
const EMAIL = "zhang.wei@example.com";
const PLANTED = [ID, ID2, PHONE, CARD, CARD19, EMAIL];
/** An 18-digit order number: its ID checksum fails (the ID above ends in X), so it is no ID, and it starts with 1, so it is no card. */
const ORDER = "110105194912310021";

const TEXT =
  `Invoice for ${EMAIL}: card ${CARD} (or 6222 0212 3456 7894), ID ${ID}, call ${PHONE} or +86 138-1234-5678, ` +
  `order ${ORDER}, backup card ${CARD19}, 2nd holder ${ID2}.`;

const tmp = mkdtempSync(path.join(tmpdir(), "glance-redaction-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function counting() {
  const counts = new Map<string, number>();
  const redactor = createRedactor(BUILT_IN_KINDS, (kind, where) =>
    counts.set(`${kind}/${where}`, (counts.get(`${kind}/${where}`) ?? 0) + 1),
  );
  return { redactor, counts };
}

const assertNone = (text: string, where: string) => {
  for (const value of PLANTED) assert.ok(!text.includes(value), `${where} shows ${value}: ${text}`);
  assert.ok(!text.includes("138-1234-5678") && !text.includes("6222 0212 3456 7894"), `${where} shows a grouped value: ${text}`);
};

describe("the built-in kinds", () => {
  it("checks ID numbers with ISO 7064 MOD 11-2 and card numbers with Luhn and their issuers' lengths", () => {
    assert.ok(validIdCard(ID) && validIdCard(ID2) && validIdCard(ID.toLowerCase()));
    assert.ok(!validIdCard(ORDER));
    assert.ok(luhn(CARD) && validBankCard(CARD) && validBankCard(CARD19) && validBankCard("4111 1111 1111 1111"));
    assert.ok(!validBankCard("6222021234567895"), "a failing Luhn check");
    assert.ok(!validBankCard("1111111111111117"), "Luhn-valid, but 1 is no bank's first digit");
  });

  it("masks every planted value and leaves the order number and ordinary numbers alone", () => {
    const { redactor, counts } = counting();
    const out = redactor.redact(TEXT, "output");
    assertNone(out, "the redacted text");
    assert.ok(out.includes(`order ${ORDER}`), out);
    assert.ok(out.includes("2nd holder [REDACTED:id_card]"), out);
    assert.equal(
      out,
      "Invoice for [REDACTED:email]: card [REDACTED:bank_card] (or [REDACTED:bank_card]), ID [REDACTED:id_card], call [REDACTED:phone] or [REDACTED:phone], " +
        `order ${ORDER}, backup card [REDACTED:bank_card], 2nd holder [REDACTED:id_card].`,
    );
    assert.deepEqual(Object.fromEntries(counts), { "email/output": 1, "bank_card/output": 3, "id_card/output": 2, "phone/output": 2 });
    const ordinary = "at 1796680000000 ms, 12 items, 138123456789 (12 digits), 2026-12-07, v1.2.3@4";
    assert.equal(redactor.redact(ordinary, "log"), ordinary);
  });

  it("finds a card followed by more digits after a space, and a value inside a longer candidate that fails", () => {
    const { redactor } = counting();
    assert.equal(redactor.redact(`card ${CARD} 2 items`, "output"), "card [REDACTED:bank_card] 2 items");
    assert.equal(redactor.redact(`22 ${CARD.match(/.{4}/g)!.join(" ")}`, "output"), "22 [REDACTED:bank_card]");
  });

  it("masks only the kinds --redact names", () => {
    const redactor = createRedactor(redactionKinds(["phone"]));
    assert.equal(redactor.redact(`${PHONE} ${EMAIL}`, "log"), `[REDACTED:phone] ${EMAIL}`);
    assert.equal(createRedactor(redactionKinds([])).redact(TEXT, "log"), TEXT);
  });
});

describe("patterns of the operator's own", () => {
  it("masks what a patterns file names, the 18-digit order number included when a pattern asks", () => {
    const file = path.join(tmp, "patterns.json");
    writeFileSync(
      file,
      JSON.stringify([
        { name: "order_number", pattern: "(?<![0-9])1[0-9]{17}(?![0-9])", maxLength: 18 },
        { name: "employee", pattern: "emp-[0-9]{5}", flags: "i" },
      ]),
    );
    const redactor = createRedactor(redactionKinds(["id_card"], file));
    assert.equal(
      redactor.redact(`order ${ORDER}, ID ${ID}, EMP-12345`, "log"),
      "order [REDACTED:order_number], ID [REDACTED:id_card], [REDACTED:employee]",
    );
  });

  it("refuses a file that is not a list of good patterns, naming the entry", () => {
    const refused = (content: string, message: RegExp) => {
      const file = path.join(tmp, "bad.json");
      writeFileSync(file, content);
      assert.throws(() => readPatternsFile(file), message);
    };
    refused("{", /bad\.json: .*JSON/);
    refused("{}", /a JSON array/);
    refused('[{"name": "Bad Name", "pattern": "x"}]', /entry 1: name must be/);
    refused('[{"name": "phone", "pattern": "x"}]', /the name phone is taken/);
    refused('[{"name": "a", "pattern": "("}]', /entry 1 \(a\): Invalid regular expression/);
    refused('[{"name": "a", "pattern": "x*"}]', /matches empty text/);
    refused('[{"name": "a", "pattern": "x", "flags": "g"}]', /flags may be/);
    refused('[{"name": "a", "pattern": "x", "maxLength": 0}]', /maxLength must be/);
    refused('[{"name": "a", "pattern": "x", "replace": "y"}]', /unknown field replace/);
  });
});

describe("streams", () => {
  const { redactor } = counting();
  const whole = redactor.redact(TEXT, "output");

  /** The text in pieces cut at `cuts`, through a stream: what each push released, and the end. */
  function streamed(cuts: number[]) {
    const stream = redactor.stream("output");
    const released: string[] = [];
    let at = 0;
    for (const cut of [...cuts, TEXT.length]) {
      released.push(stream.push(TEXT.slice(at, cut)));
      at = cut;
    }
    released.push(stream.end());
    return released;
  }

  it("gives the whole text's result for a split at every position, and no piece shows a value", () => {
    for (let cut = 0; cut <= TEXT.length; cut++) {
      const pieces = streamed([cut]);
      assert.equal(pieces.join(""), whole, `split at ${cut}`);
      for (const piece of pieces) assertNone(piece, `a piece of the split at ${cut}`);
    }
  });

  it("gives the same result a character at a time, and for random splits", () => {
    const pieces = streamed(Array.from({ length: TEXT.length - 1 }, (_, i) => i + 1));
    assert.equal(pieces.join(""), whole);
    let seed = 7;
    const random = () => {
      seed = (seed * 48271) % 2147483647;
      return seed / 2147483647;
    };
    for (let run = 0; run < 200; run++) {
      const cuts = [...new Set(Array.from({ length: 1 + Math.floor(random() * 12) }, () => Math.floor(random() * TEXT.length)))].sort(
        (a, b) => a - b,
      );
      assert.equal(streamed(cuts).join(""), whole, `cuts ${cuts}`);
    }
  });

  it("releases text that cannot become a value without waiting for the end", () => {
    const stream = redactor.stream("output");
    assert.equal(stream.push("The total is "), "The total is");
    assert.equal(stream.push("twelve yuan. Call 138"), " twelve yuan. Call");
    assert.equal(stream.push("12345678 now"), " [REDACTED:phone] ");
    assert.equal(stream.end(), "now");
  });
});

describe("log lines", () => {
  it("masks values anywhere in a line, error messages and stacks included, and keeps it JSON", () => {
    const lines: string[] = [];
    const { redactor, counts } = counting();
    const log = redactingLogger(pino({ level: "info" }, { write: (s: string) => void lines.push(s) }), redactor);
    log.info({ prompt: TEXT, callback: Number(PHONE), nested: { to: [EMAIL] } }, `sent to ${EMAIL}`);
    log.error({ err: new Error(`card ${CARD} declined`) }, "failed");
    log.child({ requestId: `r-${ID}` }).warn("slow");
    assert.equal(lines.length, 3);
    for (const line of lines) {
      assertNone(line, "a log line");
      JSON.parse(line);
    }
    const first = JSON.parse(lines[0]!) as { callback: string; msg: string };
    assert.equal(first.callback, "[REDACTED:phone]");
    assert.equal(first.msg, "sent to [REDACTED:email]");
    assert.ok(lines[0]!.includes(ORDER));
    assert.ok((counts.get("bank_card/log") ?? 0) >= 2, "the error's message and its stack");
  });
});

describe("end to end, with --redact-output and an audit log", () => {
  let ts: TestServer;
  const lines: string[] = [];
  const auditDir = path.join(tmp, "audit");
  /** The answer the model is forced to write: every planted value, and the order number. */
  const regex = TEXT.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const request = (requestId: string) => ({
    requestId,
    messages: [{ role: Role.USER, content: [{ kind: { case: "text" as const, value: `Repeat: ${TEXT}` } }] }],
    sampling: { temperature: 0, maxTokens: 400 },
    responseFormat: { kind: { case: "regex" as const, value: regex } },
  });
  const expected = createRedactor(BUILT_IN_KINDS).redact(TEXT, "output");

  before(async () => {
    const log = pino({ level: "debug" }, { write: (s: string) => void lines.push(s) });
    ts = await startTestServer(["--redact-output", "--audit-log", auditDir], { log });
  });
  after(async () => {
    await ts?.close();
  });

  it("masks the answer streamed over gRPC and Connect: no delta shows a value, and no token ids spell one", async () => {
    for (const transport of [
      createGrpcTransport({ baseUrl: `http://${ts.grpcAddress}` }),
      createConnectTransport({ baseUrl: ts.httpUrl, httpVersion: "1.1" }),
    ]) {
      const client = createClient(InferenceService, transport);
      let text = "";
      let deltas = 0;
      for await (const res of client.generate(request(`grpc-${PHONE}`))) {
        if (res.event.case !== "delta") continue;
        deltas++;
        assertNone(res.event.value.text, "a delta");
        assert.deepEqual(res.event.value.tokenIds, []);
        text += res.event.value.text;
      }
      assert.ok(deltas > 1, "the answer streamed");
      assert.equal(text, expected);
    }
  });

  it("masks the OpenAI API's answer, streamed and whole", async () => {
    const body = (stream: boolean) =>
      JSON.stringify({
        model: "tiny",
        stream,
        temperature: 0,
        max_tokens: 400,
        messages: [{ role: "user", content: `Repeat: ${TEXT}` }],
        response_format: { type: "json_schema", json_schema: { name: "echo", schema: { type: "string", enum: [TEXT] } } },
      });
    const post = (stream: boolean) =>
      fetch(`${ts.httpUrl}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: body(stream) });
    const whole = (await (await post(false)).json()) as { choices: Array<{ message: { content: string } }> };
    assert.equal(whole.choices[0]!.message.content, JSON.stringify(expected));
    const sse = await (await post(true)).text();
    assertNone(sse, "the event stream");
    const content = sse
      .split("\n\n")
      .filter((e) => e.startsWith("data: {"))
      .map((e) => (JSON.parse(e.slice(6)) as { choices: Array<{ delta: { content?: string } }> }).choices[0]?.delta.content ?? "")
      .join("");
    assert.equal(content, JSON.stringify(expected));
  });

  it("masks Extract's JSON and keeps it JSON", async () => {
    const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${ts.grpcAddress}` }));
    const res = await client.extract({
      instruction: `Repeat: ${TEXT}`,
      schema: {
        schema: JSON.stringify({
          type: "object",
          properties: { note: { type: "string", enum: [TEXT] } },
          required: ["note"],
          additionalProperties: false,
        }),
      },
      sampling: { temperature: 0, maxTokens: 400 },
    });
    assertNone(res.json, "Extract's json");
    assert.deepEqual(res.value, { note: expected });
  });

  it("never writes a value to the logs or the audit log, and counts what it masked", async () => {
    const metrics = await (await fetch(`${ts.httpUrl}/metrics`)).text();
    await ts.close();
    const log = lines.join("");
    assertNone(log, "the log");
    assert.ok(log.includes(`"requestId":"grpc-[REDACTED:phone]"`), "the request id was logged, masked");
    const files = readdirSync(auditDir);
    assert.equal(files.length, 1);
    const audit = readFileSync(path.join(auditDir, files[0]!), "utf8");
    assertNone(audit, "the audit log");
    const records = audit
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { prompt: Array<{ text: string }>; answer: string });
    assert.equal(records.length, 5);
    for (const r of records) {
      assert.ok(r.prompt[0]!.text.includes(ORDER) && r.prompt[0]!.text.includes("[REDACTED:id_card]"), r.prompt[0]!.text);
      assert.ok(r.answer.includes("[REDACTED:phone]"), r.answer);
    }
    for (const where of ["output", "audit", "log"]) {
      assert.match(metrics, new RegExp(`glance:redactions_total\\{kind="phone",where="${where}"\\} [1-9]`), where);
    }
    assert.match(metrics, /glance:redactions_total\{kind="bank_card",where="output"\} [1-9]/);
  });
});
