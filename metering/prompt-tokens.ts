import type { Llama3Tokenizer } from "llama3-tokenizer-js";
import type { CompletionKind } from "./estimates.ts";

// Loaded on first use: its vocabulary is megabytes that most processes never need.
let tokenizer: Promise<Llama3Tokenizer> | null = null;
const loadTokenizer = () => {
  tokenizer ??= import("llama3-tokenizer-js").then((m) => m.default);
  return tokenizer;
};

/**
 * Text tokenized exactly per request; past it, the rest is counted at the rate measured on this much
 * (about 20 ms of CPU): a tenant's 8 MiB prompt must not hold the event loop for seconds.
 */
const EXACT_CHARS = 64 * 1024;
/** Chat templates add role headers per message and a preamble (Llama 3.1's dated system header, Qwen's default system prompt). */
const CHAT_TOKENS_PER_MESSAGE = 5;
const CHAT_TOKENS_BASE = 28;
/** A completions prompt gets the beginning-of-text token. */
const COMPLETION_SPECIAL_TOKENS = 1;

function contentText(content: unknown): string {
  if (typeof content === "string") {
    return content;
  }
  if (Array.isArray(content)) {
    return content
      .map((part) => {
        const text = (part as { text?: unknown } | null)?.text;
        return typeof text === "string" ? text : JSON.stringify(part);
      })
      .join("\n");
  }
  return content === undefined || content === null ? "" : JSON.stringify(content);
}

/** The texts a request's prompts are made of: one per prompt, with how many framing tokens each adds. */
function promptTexts(
  kind: CompletionKind,
  body: Record<string, unknown>,
): { text: string; framing: number }[] {
  if (kind === "chat") {
    const messages = Array.isArray(body.messages) ? body.messages : [];
    const parts = messages.map((m) => {
      const message = (m ?? {}) as Record<string, unknown>;
      const calls = message.tool_calls === undefined ? "" : JSON.stringify(message.tool_calls);
      return `${String(message.role ?? "")}\n${contentText(message.content)}${calls}`;
    });
    const tools = body.tools === undefined ? "" : JSON.stringify(body.tools);
    return [
      {
        text: parts.join("\n") + tools,
        framing: CHAT_TOKENS_BASE + CHAT_TOKENS_PER_MESSAGE * messages.length,
      },
    ];
  }
  const prompt = body.prompt;
  const one = (p: unknown) =>
    Array.isArray(p) && p.every((t) => typeof t === "number")
      ? { text: "", framing: p.length } // token ids are counted as they are
      : { text: typeof p === "string" ? p : JSON.stringify(p ?? ""), framing: COMPLETION_SPECIAL_TOKENS };
  if (Array.isArray(prompt) && prompt.length > 0 && !prompt.every((t) => typeof t === "number")) {
    return prompt.map(one);
  }
  return [one(prompt)];
}

/**
 * Each prompt's tokens as a BPE tokenizer counts them (Llama 3's, shipped with the package: within a
 * few percent of other 128k-150k vocabularies on ordinary text), for billing prompts an upstream did
 * not report. At most `EXACT_CHARS` are tokenized; each prompt is capped at the context window.
 */
export async function estimatePromptTokens(
  kind: CompletionKind,
  body: Record<string, unknown>,
  contextTokens: number,
): Promise<number[]> {
  const llama3Tokenizer = await loadTokenizer();
  const prompts = promptTexts(kind, body);
  const totalChars = prompts.reduce((n, p) => n + p.text.length, 0);
  let rate: number | null = null;
  if (totalChars > EXACT_CHARS) {
    const sample = prompts
      .map((p) => p.text)
      .join("\n")
      .slice(0, EXACT_CHARS);
    rate = llama3Tokenizer.encode(sample, { bos: false, eos: false }).length / Math.max(1, sample.length);
  }
  return prompts.map(({ text, framing }) => {
    const tokens =
      rate === null
        ? llama3Tokenizer.encode(text, { bos: false, eos: false }).length
        : Math.ceil(text.length * rate);
    return Math.min(contextTokens, tokens + framing);
  });
}
