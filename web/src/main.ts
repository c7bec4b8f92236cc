/**
 * The playground page: pick an image, ask, and watch the answer stream. The DOM wiring only; the
 * call is api.ts, the turns conversation.ts, the timings panel timings.ts.
 */
import type { Done } from "../../gen/glance/v1/inference_pb.js";
import { createApi, describeError, isCancel } from "./api.ts";
import { createConversation } from "./conversation.ts";
import { timingRows } from "./timings.ts";
import "./style.css";

const byId = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const imageInput = byId<HTMLInputElement>("image-input");
const dropZone = byId<HTMLDivElement>("drop-zone");
const preview = byId<HTMLImageElement>("preview");
const dropHint = byId<HTMLParagraphElement>("drop-hint");
const form = byId<HTMLFormElement>("ask-form");
const questionInput = byId<HTMLTextAreaElement>("question-input");
const askButton = byId<HTMLButtonElement>("ask-button");
const stopButton = byId<HTMLButtonElement>("stop-button");
const newButton = byId<HTMLButtonElement>("new-button");
const temperatureInput = byId<HTMLInputElement>("temperature");
const maxTokensInput = byId<HTMLInputElement>("max-tokens");
const apiKeyInput = byId<HTMLInputElement>("api-key");
const thinkingSelect = byId<HTMLSelectElement>("thinking");
const reasoningBox = byId<HTMLDetailsElement>("reasoning-box");
const reasoning = byId<HTMLDivElement>("reasoning");
const structuredOn = byId<HTMLInputElement>("structured-on");
const schemaInput = byId<HTMLTextAreaElement>("schema-input");
const conversationList = byId<HTMLOListElement>("conversation");
const answer = byId<HTMLDivElement>("answer");
const json = byId<HTMLPreElement>("json");
const errorBox = byId<HTMLParagraphElement>("error");
const timings = byId<HTMLDListElement>("timings");
const modelLine = byId<HTMLParagraphElement>("model");

const API_KEY_ITEM = "glance.apiKey";
apiKeyInput.value = localStorage.getItem(API_KEY_ITEM) ?? "";
apiKeyInput.addEventListener("change", () => {
  localStorage.setItem(API_KEY_ITEM, apiKeyInput.value.trim());
  void showModel();
});

const api = createApi(() => apiKeyInput.value.trim());
const conversation = createConversation();
let running: AbortController | undefined;

function showError(message: string | undefined): void {
  errorBox.textContent = message ?? "";
  errorBox.hidden = message === undefined;
}

async function showModel(): Promise<void> {
  try {
    const { models } = await api.listModels({});
    const m = models[0];
    modelLine.textContent = m
      ? `Model ${m.id} (${m.modelType}, ${m.contextLength} tokens of context)${m.ready ? "" : ", loading"}`
      : "No model";
  } catch (e) {
    modelLine.textContent = `The server did not list its models: ${describeError(e)}`;
  }
}

async function setImage(file: File): Promise<void> {
  conversation.setImage(new Uint8Array(await file.arrayBuffer()));
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.alt = `The chosen image, ${file.name}`;
  preview.hidden = false;
  dropHint.textContent = `${file.name}: drop, paste or choose another image to start over.`;
  resetConversation();
  questionInput.focus();
}

function resetConversation(): void {
  conversation.clear();
  conversationList.replaceChildren();
  answer.replaceChildren();
  delete answer.dataset["state"];
  json.hidden = true;
  timings.replaceChildren();
  showError(undefined);
}

function addTurn(question: string, reply: string): void {
  const item = document.createElement("li");
  const q = document.createElement("p");
  q.className = "question";
  q.textContent = question;
  const a = document.createElement("p");
  a.className = "previous-answer";
  a.textContent = reply;
  item.append(q, a);
  conversationList.append(item);
}

function showTimings(rows: [string, string][]): void {
  timings.replaceChildren(
    ...rows.flatMap(([label, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = value;
      return [dt, dd];
    }),
  );
}

/** The request's response_format, or an error message for a schema that is not JSON. */
function responseFormat(): {
  value?: { kind: { case: "jsonSchema"; value: { name: string; schema: string; strict: boolean } } };
  error?: string;
} {
  if (!structuredOn.checked) return {};
  try {
    JSON.parse(schemaInput.value);
  } catch (e) {
    return { error: `The schema is not JSON: ${(e as Error).message}` };
  }
  return { value: { kind: { case: "jsonSchema", value: { name: "playground", schema: schemaInput.value, strict: true } } } };
}

async function ask(): Promise<void> {
  const question = questionInput.value.trim();
  if (!question || running) return;
  answer.replaceChildren();
  reasoning.replaceChildren();
  reasoningBox.hidden = true;
  json.hidden = true;
  timings.replaceChildren();
  showError(undefined);
  const format = responseFormat();
  if (format.error) return showError(format.error);
  const maxTokens = maxTokensInput.valueAsNumber;
  const controller = new AbortController();
  running = controller;
  askButton.disabled = true;
  stopButton.disabled = false;
  answer.dataset["state"] = "streaming";
  answer.setAttribute("aria-busy", "true");
  const started = performance.now();
  let firstTokenMs: number | undefined;
  let tokens = 0;
  let text = "";
  let done: Done | undefined;
  try {
    const stream = api.generate(
      {
        messages: conversation.messagesFor(question),
        sampling: {
          temperature: Number.isFinite(temperatureInput.valueAsNumber) ? temperatureInput.valueAsNumber : undefined,
          maxTokens: Number.isFinite(maxTokens) ? maxTokens : undefined,
        },
        responseFormat: format.value,
        chat: thinkingSelect.value ? { enableThinking: thinkingSelect.value === "on" } : undefined,
      },
      { signal: controller.signal },
    );
    for await (const res of stream) {
      if (res.event.case === "delta") {
        firstTokenMs ??= performance.now() - started;
        tokens += Math.max(1, res.event.value.tokenIds.length);
        text += res.event.value.text;
        if (res.event.value.reasoning) {
          reasoningBox.hidden = false;
          reasoning.append(document.createTextNode(res.event.value.reasoning));
        }
        // One text node per delta: the answer grows as it streams, and a screen reader hears the additions.
        answer.append(document.createTextNode(res.event.value.text));
      } else if (res.event.case === "done") {
        done = res.event.value;
      }
    }
    answer.dataset["state"] = "done";
    if (format.value) {
      json.textContent = JSON.stringify(JSON.parse(text), null, 2);
      json.hidden = false;
    }
    conversation.record({ question, answer: text });
    addTurn(question, text);
    questionInput.value = "";
  } catch (e) {
    if (isCancel(e)) {
      answer.dataset["state"] = "stopped";
      answer.append(document.createTextNode(" [stopped]"));
    } else {
      answer.dataset["state"] = "failed";
      showError(describeError(e));
    }
  } finally {
    running = undefined;
    askButton.disabled = false;
    stopButton.disabled = true;
    answer.removeAttribute("aria-busy");
    showTimings(timingRows({ firstTokenMs, totalMs: performance.now() - started, tokens }, done));
    questionInput.focus();
  }
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  void ask();
});
questionInput.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    form.requestSubmit();
  }
});
stopButton.addEventListener("click", () => running?.abort());
newButton.addEventListener("click", () => {
  resetConversation();
  questionInput.focus();
});
imageInput.addEventListener("change", () => {
  const file = imageInput.files?.[0];
  if (file) void setImage(file);
});
dropZone.addEventListener("dragover", (e) => {
  e.preventDefault();
  dropZone.classList.add("dragging");
});
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
dropZone.addEventListener("drop", (e) => {
  e.preventDefault();
  dropZone.classList.remove("dragging");
  const file = e.dataTransfer?.files[0];
  if (file) void setImage(file);
});
document.addEventListener("paste", (e) => {
  const file = [...(e.clipboardData?.files ?? [])].find((f) => f.type.startsWith("image/"));
  if (file) {
    e.preventDefault();
    void setImage(file);
  }
});
void showModel();
