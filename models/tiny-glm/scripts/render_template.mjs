// Renders the chat template with @huggingface/jinja (transformers.js's engine) and prints the
// prompt for one image + question, with and without enable_thinking=false.
//   node models/tiny-glm/scripts/render_template.mjs
import { readFileSync } from "node:fs";
import { Template } from "@huggingface/jinja";

const here = new URL(".", import.meta.url).pathname;
const tpl = new Template(readFileSync(here + "chat_template.jinja", "utf8"));
const messages = [{ role: "user", content: [{ type: "image" }, { type: "text", text: "What is the total?" }] }];
console.log(JSON.stringify(tpl.render({ messages, add_generation_prompt: true })));
console.log(JSON.stringify(tpl.render({ messages, add_generation_prompt: true, enable_thinking: false })));
console.log(JSON.stringify(tpl.render({ messages: [...messages, { role: "assistant", content: "¥599" }], add_generation_prompt: false })));
console.log(JSON.stringify(tpl.render({ messages: [{ role: "user", content: "hi" }], add_generation_prompt: true })));
