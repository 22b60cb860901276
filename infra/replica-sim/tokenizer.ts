import type { Llama3Tokenizer } from "llama3-tokenizer-js";

/** The base model's tokenizer (Llama 3.1, shipped inside the package) and its chat template. */
export interface SimTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string;
  /** Token strings as the Hugging Face tokenizer shows them (byte-level, `Ġ` for a space). */
  tokenStrings(ids: readonly number[]): string[];
  renderChat(messages: readonly ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
  readonly vocabSize: number;
  readonly bosTokenId: number;
  /** `<|end_of_text|>`: ends a plain completion. */
  readonly eosTokenId: number;
  /** `<|eot_id|>`: ends a chat turn. */
  readonly eotTokenId: number;
  /** Single-token words the simulated model "generates", each with its leading space. */
  readonly fillerTokenIds: readonly number[];
}

export interface ChatMessage {
  role: string;
  content: string;
}

const FILLER_WORDS = [
  "the",
  "model",
  "adapter",
  "answer",
  "is",
  "a",
  "short",
  "reply",
  "with",
  "some",
  "words",
  "and",
  "more",
  "text",
  "for",
  "this",
  "request",
  "lorem",
  "ipsum",
  "dolor",
  "sit",
  "amet",
  "data",
  "value",
  "system",
  "user",
  "help",
  "note",
  "time",
  "line",
  "test",
  "case",
  "token",
  "stream",
  "batch",
  "load",
];

const FIRST_SPECIAL_ID = 128000;

// The Llama 3.1 Instruct template as vLLM renders it without tools: a system header with the
// knowledge-cutoff lines is always present, and message contents are trimmed.
function renderLlama31Chat(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string {
  let system = "";
  let rest = messages;
  const first = messages[0];
  if (first && first.role === "system") {
    system = first.content.trim();
    rest = messages.slice(1);
  }
  let out = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n";
  out += "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
  out += `${system}<|eot_id|>`;
  for (const m of rest) {
    out += `<|start_header_id|>${m.role}<|end_header_id|>\n\n${m.content.trim()}<|eot_id|>`;
  }
  if (addGenerationPrompt) {
    out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  }
  return out;
}

function wrap(tok: Llama3Tokenizer): SimTokenizer {
  const bos = tok.getSpecialTokenId("<|begin_of_text|>");
  const eos = tok.getSpecialTokenId("<|end_of_text|>");
  const eot = tok.getSpecialTokenId("<|eot_id|>");
  const filler: number[] = [];
  for (const w of FILLER_WORDS) {
    const ids = tok.encode(` ${w}`, { bos: false, eos: false });
    const id = ids[0];
    if (ids.length === 1 && id !== undefined) {
      filler.push(id);
    }
  }
  const vocabSize = tok.vocabById.length;
  return {
    vocabSize,
    bosTokenId: bos,
    eosTokenId: eos,
    eotTokenId: eot,
    fillerTokenIds: filler,
    encode(text, opts) {
      const ids = tok.encode(text, { bos: false, eos: false });
      return opts?.addSpecialTokens === false ? ids : [bos, ...ids];
    },
    decode(ids, opts) {
      const kept = opts?.skipSpecialTokens ? ids.filter((id) => id < FIRST_SPECIAL_ID) : [...ids];
      return tok.decode(kept);
    },
    tokenStrings(ids) {
      return ids.map((id) => tok.vocabById[id] ?? "");
    },
    renderChat(messages, opts) {
      return renderLlama31Chat(messages, opts?.addGenerationPrompt ?? true);
    },
  };
}

let loading: Promise<SimTokenizer> | undefined;

/** Loads the tokenizer once per process (its baked vocabulary takes about half a second to decode). */
export function loadTokenizer(): Promise<SimTokenizer> {
  loading ??= import("llama3-tokenizer-js").then((m) => wrap(m.default));
  return loading;
}
