import { AppError } from "../lib/index.ts";
import { costPicos, type Prices } from "./pricing.ts";

export type CompletionKind = "chat" | "completion";

/** OpenAI's own bounds, kept by the gateway whatever an engine accepts: `n`/`best_of` ≤ 128, ≤ 2048 prompts. */
export const MAX_CHOICES = 128;
export const MAX_PROMPTS = 2_048;
/** vLLM's own cap on the sequences of one request (VLLM_MAX_N_SEQUENCES' default). */
export const MAX_SEQUENCES = 16_384;
/** The context window assumed for a base that does not state its own. */
export const DEFAULT_CONTEXT_TOKENS = 131_072;
/** vLLM's `/v1/completions` default (`CompletionRequest.max_tokens = 16`, also for an explicit null). */
const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;
/**
 * Tokens a chat template may add beyond the body's own bytes (role headers, a default system prompt
 * such as Llama 3.1's dated preamble), and special tokens per prompt of a completions batch.
 */
const TEMPLATE_TOKENS = 256;
const SPECIAL_TOKENS_PER_PROMPT = 16;

/** What a request can cost, in tokens, before it runs: the bounds its budget reservation is priced at. */
export interface CostBounds {
  /** Prompts in the request: a completions request may batch several, each generating on its own. */
  prompts: number;
  /** `n`: the choices returned per prompt (a stream's choice i belongs to prompt ⌊i / n⌋). */
  choicesPerPrompt: number;
  /** Sequences generated per prompt: max(n, best_of) (vLLM releases that honour best_of generate it all). */
  sequencesPerPrompt: number;
  /** The most completion tokens one sequence can take. */
  maxTokensPerSequence: number;
  /** The most prompt tokens the request can be billed: byte-level BPE never makes more tokens than bytes. */
  maxPromptTokens: number;
  /** The most completion tokens: prompts × sequences × per sequence. */
  maxCompletionTokens: number;
}

function invalid(param: string, message: string): AppError {
  return new AppError("VALIDATION", message, { errors: [{ path: param, message }] });
}

/** An optional whole number in [min, max]; null when absent or null (the engine's default applies). */
function optionalCount(
  body: Record<string, unknown>,
  field: string,
  min: number,
  max: number,
): number | null {
  const value = body[field];
  if (value === undefined || value === null) {
    return null;
  }
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    const shown = typeof value === "string" ? JSON.stringify(value.slice(0, 32)) : String(value).slice(0, 32);
    throw invalid(field, `'${field}' must be an integer, got ${shown}`);
  }
  if (value < min || value > max) {
    throw invalid(field, `'${field}' must be between ${min} and ${max}, got ${value}`);
  }
  return value;
}

/** How many prompts a completions `prompt` holds: a string or token ids is one, a list of them is each. */
function countPrompts(prompt: unknown): number {
  if (!Array.isArray(prompt) || prompt.length === 0 || prompt.every((p) => typeof p === "number")) {
    return 1;
  }
  if (prompt.length > MAX_PROMPTS) {
    throw invalid("prompt", `'prompt' holds ${prompt.length} prompts; at most ${MAX_PROMPTS} per request`);
  }
  return prompt.length;
}

/**
 * Checks the fields that decide what a request can cost (`max_tokens`, `max_completion_tokens`, `n`,
 * `best_of`, the prompts of a batch) and bounds its tokens. A bad value is a 400 naming the field,
 * never left for the engine to refuse or, worse, to serve. `contextTokens`: the base's context window;
 * `bodyBytes`: the request body's size.
 */
export function costBounds(
  kind: CompletionKind,
  body: Record<string, unknown>,
  bodyBytes: number,
  contextTokens: number,
): CostBounds {
  const n = optionalCount(body, "n", 1, MAX_CHOICES) ?? 1;
  const bestOf = optionalCount(body, "best_of", 1, MAX_CHOICES);
  if (bestOf !== null && bestOf < n) {
    throw invalid("best_of", `'best_of' must be at least 'n' (${n}), got ${bestOf}`);
  }
  const maxTokens = optionalCount(body, "max_tokens", 1, contextTokens);
  const maxCompletionTokens = optionalCount(body, "max_completion_tokens", 1, contextTokens);
  const prompts = kind === "completion" ? countPrompts(body.prompt) : 1;
  const sequencesPerPrompt = Math.max(n, bestOf ?? 1);
  if (prompts * sequencesPerPrompt > MAX_SEQUENCES) {
    throw invalid(
      "n",
      `${prompts} prompts × ${sequencesPerPrompt} choices is ${prompts * sequencesPerPrompt} sequences; at most ${MAX_SEQUENCES} per request`,
    );
  }
  // vLLM takes max_completion_tokens over max_tokens; the larger of the two bounds either. Without
  // either, chat generates up to the rest of the context window and completions 16 tokens.
  const stated = Math.max(maxTokens ?? 0, maxCompletionTokens ?? 0);
  const fallback = kind === "chat" ? contextTokens : COMPLETIONS_DEFAULT_MAX_TOKENS;
  const maxTokensPerSequence = Math.min(stated > 0 ? stated : fallback, contextTokens - 1);
  const maxPromptTokens = Math.min(
    prompts * contextTokens,
    bodyBytes + TEMPLATE_TOKENS + SPECIAL_TOKENS_PER_PROMPT * prompts,
  );
  return {
    prompts,
    choicesPerPrompt: n,
    sequencesPerPrompt,
    maxTokensPerSequence,
    maxPromptTokens,
    maxCompletionTokens: prompts * sequencesPerPrompt * maxTokensPerSequence,
  };
}

/** The most a request can cost at these prices: what its budget reservation holds until it settles. */
export function worstCaseCostPicos(prices: Prices, bounds: CostBounds): bigint {
  return costPicos(prices, bounds.maxPromptTokens, bounds.maxCompletionTokens);
}
