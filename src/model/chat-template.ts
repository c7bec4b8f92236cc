/**
 * Renders a conversation into the prompt text with the model's own Jinja chat template
 * (tokenizer_config.json), through @huggingface/jinja, as transformers does.
 */
import { Template } from "@huggingface/jinja";
import { GlanceError, invalidArgument } from "../errors.ts";

export type ChatRole = "system" | "user" | "assistant";
export type ChatPart = { type: "text"; text: string } | { type: "image" };
export interface ChatMessage {
  role: ChatRole;
  content: ChatPart[];
}

/** The template's switches (vLLM's chat_template_kwargs); unset ones are not passed, so the template's defaults hold. */
export interface TemplateOptions {
  enableThinking?: boolean;
}

export interface ChatTemplate {
  /** The prompt for the next assistant turn. */
  render(messages: ChatMessage[], options?: TemplateOptions): string;
}

export function createChatTemplate(tokenizerConfig: Record<string, unknown>): ChatTemplate {
  const source = tokenizerConfig["chat_template"];
  if (typeof source !== "string") {
    throw new GlanceError("unavailable", "tokenizer_config.json has no chat_template");
  }
  const template = new Template(source);
  const specials = Object.fromEntries(["bos_token", "eos_token", "pad_token", "unk_token"].map((k) => [k, tokenizerConfig[k] ?? ""]));
  return {
    render(messages, options = {}) {
      const switches = options.enableThinking === undefined ? {} : { enable_thinking: options.enableThinking };
      try {
        return template.render({ ...specials, ...switches, messages, add_generation_prompt: true });
      } catch (e) {
        // Templates raise on conversations they do not support (e.g. roles out of order).
        throw invalidArgument(`the model's chat template cannot render this conversation: ${(e as Error).message}`);
      }
    },
  };
}
