/**
 * One conversation about one image: the image rides in the first user turn, and every
 * question is asked with the turns before it, as a chat client sends them.
 */
import { Role } from "../../gen/glance/v1/inference_pb.js";
import type { GenerateRequestInit } from "./api.ts";

export interface Turn {
  question: string;
  answer: string;
}

export interface Conversation {
  readonly image: Uint8Array | undefined;
  readonly turns: readonly Turn[];
  /** A new image starts a new conversation. */
  setImage(image: Uint8Array | undefined): void;
  clear(): void;
  /** The messages that ask `question` after the turns so far. */
  messagesFor(question: string): NonNullable<GenerateRequestInit["messages"]>;
  /** Keeps an answered question, so that the next one is asked after it. */
  record(turn: Turn): void;
}

export function createConversation(): Conversation {
  let image: Uint8Array | undefined;
  let turns: Turn[] = [];
  const user = (text: string, withImage: boolean) => ({
    role: Role.USER,
    content: [
      ...(withImage && image ? [{ kind: { case: "image" as const, value: { source: { case: "data" as const, value: image } } } }] : []),
      { kind: { case: "text" as const, value: text } },
    ],
  });
  return {
    get image() {
      return image;
    },
    get turns() {
      return turns;
    },
    setImage(next) {
      image = next;
      turns = [];
    },
    clear() {
      turns = [];
    },
    messagesFor(question) {
      return [
        ...turns.flatMap((t, i) => [
          user(t.question, i === 0),
          { role: Role.ASSISTANT, content: [{ kind: { case: "text" as const, value: t.answer } }] },
        ]),
        user(question, turns.length === 0),
      ];
    },
    record(turn) {
      turns.push(turn);
    },
  };
}
