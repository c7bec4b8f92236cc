/**
 * The playground in a real browser: Debian's Chromium, driven by playwright-core, against
 * `npm start` with an API key. The page streams answers over Connect from the HTTP port; these
 * tests use it as a person would (pick a file, type, press buttons) and read only what the
 * page shows and what the server's metrics say.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { type Browser, chromium, type Page } from "playwright-core";
import { InferenceService, Role } from "../gen/glance/v1/inference_pb.js";
import { isCorrect, loadHeldOut } from "../scripts/lib/heldout.ts";
import { freePort } from "./support/free-port.ts";

// What the callbacks run in the page use of its DOM, declared here: the tests' program has no
// DOM library (its fetch and stream types would clash with Node's).
interface PageElement {
  dataset: Record<string, string | undefined>;
  textContent: string | null;
  click(): void;
}
declare const document: { querySelector(selectors: string): PageElement | null; documentElement: { scrollWidth: number } };
declare const MutationObserver: new (callback: () => void) => { observe(target: PageElement, options: object): void; disconnect(): void };
declare const localStorage: { getItem(key: string): string | null };

const root = path.resolve(import.meta.dirname, "..");
const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium";
const KEY = "glk_playground";
const outputDir = path.join(root, "test-results", "playground");
const heldOut = loadHeldOut();
const imagePath = (image: string) => path.join(root, "models/tiny/heldout", image);

/** `npm start` on free ports, as the README starts it; resolves once the server says it is ready. */
async function npmStart(flags: string[]): Promise<{ child: ChildProcess; http: number }> {
  const [grpc, http] = [await freePort(), await freePort()];
  const child = spawn(
    "npm",
    ["start", "--", "--host", "127.0.0.1", "--grpc-port", String(grpc), "--http-port", String(http), "--threads", "1", ...flags],
    { cwd: root, stdio: ["ignore", "pipe", "inherit"], detached: true },
  );
  await new Promise<void>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes('"msg":"ready"')) resolve();
    });
    child.once("exit", (code) => reject(new Error(`npm start exited (${code}) before the server was ready`)));
  });
  child.stdout!.resume();
  return { child, http };
}

describe("the playground in Chromium", () => {
  let server: ChildProcess;
  let base: string;
  let browser: Browser;
  let page: Page;
  /** Every URL the page asked for, to show that it needs nothing from elsewhere. */
  const requested: string[] = [];

  const metric = async (pattern: RegExp) =>
    Number(pattern.exec(await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${KEY}` } })).text())?.[1] ?? 0);

  /** Asks the question in the page and resolves with every text the answer showed until it settled. */
  async function ask(question: string): Promise<{ updates: string[]; state: string }> {
    await page.evaluate(() => {
      const answer = document.querySelector("[data-testid=answer]")!;
      const seen: string[] = [];
      (globalThis as unknown as { seen: string[] }).seen = seen;
      new MutationObserver(() => {
        if (answer.dataset["state"] === "streaming" && answer.textContent) seen.push(answer.textContent);
      }).observe(answer, { childList: true, characterData: true, subtree: true });
    });
    await page.getByTestId("question-input").fill(question);
    await page.getByTestId("ask-button").click();
    await page.waitForFunction(() =>
      ["done", "stopped", "failed"].includes(document.querySelector("[data-testid=answer]")!.dataset["state"]!),
    );
    return {
      updates: await page.evaluate(() => (globalThis as unknown as { seen: string[] }).seen),
      state: (await page.getByTestId("answer").getAttribute("data-state"))!,
    };
  }

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: install Debian's chromium (as .ci/run does), or set CHROMIUM`);
    ({ child: server } = await npmStart(["--api-key", KEY]).then((s) => {
      base = `http://127.0.0.1:${s.http}`;
      return s;
    }));
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    page.on("request", (r) => requested.push(r.url()));
    await page.goto(`${base}/`);
  });

  after(async () => {
    await browser?.close();
    if (server?.pid) process.kill(-server.pid, "SIGTERM");
  });

  it("shows the server's own error without a key, then keeps the typed key in local storage", async () => {
    await page.getByTestId("image-input").setInputFiles(imagePath(heldOut[0]!.image));
    const { state } = await ask("How many shapes are there?");
    assert.equal(state, "failed");
    assert.match((await page.getByTestId("error").textContent())!, /^unauthenticated: .*API key/);
    await page.getByText("Settings").click();
    await page.getByLabel("API key").fill(KEY);
    await page.getByLabel("API key").blur();
    await page.reload();
    assert.equal(await page.getByLabel("API key").inputValue(), KEY);
    assert.equal(await page.evaluate(() => localStorage.getItem("glance.apiKey")), KEY);
  });

  it("streams a correct answer about an uploaded image, then answers a follow-up about it", async () => {
    const first = heldOut.find(
      (q) => q.kind === "describe" && q.lang === "en" && heldOut.some((x) => x.image === q.image && x.lang === "zh"),
    )!;
    const second = heldOut.find((q) => q.image === first.image && q.lang === "zh")!;
    await page.getByTestId("image-input").setInputFiles(imagePath(first.image));
    const one = await ask(first.question);
    assert.equal(one.state, "done");
    const answer = (await page.getByTestId("answer").textContent())!;
    assert.ok(isCorrect(first, answer), `${JSON.stringify(answer)} for ${first.question} (expected ${first.answer})`);
    assert.ok(new Set(one.updates).size >= 2, `the answer grew ${one.updates.length} times before it completed`);
    assert.ok(
      one.updates.every((u) => answer.startsWith(u)),
      "every update is a beginning of the answer",
    );
    const timings = (await page.getByTestId("timings").textContent())!.replace(/\s+/g, " ");
    assert.match(timings, /Time to first token\s*\d+(\.\d)? ms/);
    assert.match(timings, /Server: prefill\s*\d+(\.\d)? ms/);
    assert.match(timings, /Completion tokens\s*[1-9]\d*/);

    const two = await ask(second.question);
    assert.equal(two.state, "done");
    const followUp = (await page.getByTestId("answer").textContent())!;
    assert.ok(isCorrect(second, followUp), `${JSON.stringify(followUp)} for ${second.question} (expected ${second.answer})`);
    assert.equal(await page.locator("#conversation li").count(), 2, "both turns are in the conversation");

    mkdirSync(outputDir, { recursive: true });
    const shot = path.join(outputDir, "answer.png");
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(readFileSync(shot).byteLength > 10_000, "the screenshot has content");
  });

  it("pretty-prints JSON that validates against a pasted schema", async () => {
    const q = heldOut.find((x) => x.kind === "count" && x.lang === "en")!;
    await page.getByTestId("image-input").setInputFiles(imagePath(q.image));
    await page.getByText("Structured output").click();
    await page.getByLabel("Answer with JSON").check();
    await page
      .getByLabel("JSON Schema")
      .fill(JSON.stringify({ type: "object", properties: { count: { type: "integer", minimum: 1, maximum: 3 } }, required: ["count"] }));
    assert.equal((await ask(q.question)).state, "done");
    const value = JSON.parse((await page.locator("#json").textContent())!);
    assert.ok(Number.isInteger(value.count) && value.count >= 1 && value.count <= 3, JSON.stringify(value));
    assert.match((await page.locator("#json").textContent())!, /\n {2}"count"/, "pretty-printed");
    await page.getByLabel("Answer with JSON").uncheck();
  });

  it("stops mid-stream, and the server frees the request", async () => {
    const cancelled = /glance:requests_total\{key="default",status="cancelled"\} (\d+)/;
    const before = await metric(cancelled);
    await page.getByTestId("image-input").setInputFiles(imagePath(heldOut[0]!.image));
    // A schema that needs 440 characters: about a second of decoding on the tiny model.
    await page.getByLabel("Answer with JSON").check();
    await page.getByLabel("JSON Schema").fill(JSON.stringify({ type: "string", minLength: 440 }));
    await page.getByText("Settings").click();
    await page.getByLabel("Max tokens").fill("460");
    await page.getByTestId("question-input").fill("Describe the image.");
    // Stop as the first text shows, from the page itself: on a loaded machine a click from here
    // could come after the answer's last token.
    await page.evaluate(() => {
      const answer = document.querySelector("[data-testid=answer]")!;
      const observer = new MutationObserver(() => {
        if (!answer.textContent) return;
        observer.disconnect();
        document.querySelector("[data-testid=stop-button]")!.click();
      });
      observer.observe(answer, { childList: true, characterData: true, subtree: true });
    });
    await page.getByTestId("ask-button").click();
    await page.waitForSelector("[data-testid=answer][data-state=stopped]");
    const shown = (await page.getByTestId("answer").textContent())!;
    assert.ok(shown.length < 440, `stopped after ${shown.length} characters`);
    for (let i = 0; ; i++) {
      if ((await metric(cancelled)) === before + 1 && (await metric(/glance:num_requests_running (\d+)/)) === 0) break;
      assert.ok(i < 50, "the server still runs the stopped request");
      await new Promise((r) => setTimeout(r, 100));
    }
    await page.getByLabel("Answer with JSON").uncheck();
    await page.getByLabel("Max tokens").fill("");
  });

  it("shows the server's own words for an image it cannot decode", async () => {
    const broken = Buffer.from("this is not a PNG at all");
    await page.getByTestId("image-input").setInputFiles({ name: "broken.png", mimeType: "image/png", buffer: broken });
    assert.equal((await ask("What color is the circle?")).state, "failed");
    const client = createClient(InferenceService, createConnectTransport({ baseUrl: base, httpVersion: "1.1" }));
    const server = await (async () => {
      try {
        for await (const _ of client.generate(
          {
            messages: [
              {
                role: Role.USER,
                content: [
                  { kind: { case: "image", value: { source: { case: "data", value: broken } } } },
                  { kind: { case: "text", value: "What color is the circle?" } },
                ],
              },
            ],
          },
          { headers: { authorization: `Bearer ${KEY}` } },
        ));
      } catch (e) {
        return ConnectError.from(e);
      }
      assert.fail("the server answered a broken image");
    })();
    assert.equal(server.code, Code.InvalidArgument);
    assert.equal(await page.getByTestId("error").textContent(), `invalid_argument: ${server.rawMessage}`);
  });

  it("loads nothing from elsewhere, fits a phone's width and stays under 100 KB gzipped", async () => {
    assert.ok(requested.length > 0);
    for (const url of requested) assert.ok(url.startsWith(`${base}/`) || url.startsWith("blob:") || url.startsWith("data:"), url);
    await page.setViewportSize({ width: 375, height: 800 });
    assert.ok((await page.evaluate(() => document.documentElement.scrollWidth)) <= 375, "no sideways scrolling at 375 px");
    const dist = path.join(root, "web/dist");
    const files = ["index.html", ...readdirSync(path.join(dist, "assets")).map((f) => `assets/${f}`)];
    const gzipped = files.reduce((n, f) => n + gzipSync(readFileSync(path.join(dist, f))).byteLength, 0);
    assert.ok(gzipped <= 100 * 1024, `${gzipped} bytes gzipped`);
  });
});
