import { describe, expect, it } from "vitest";
import { AppError } from "../lib/errors.ts";
import { costBounds, MAX_PROMPTS, worstCaseCostPicos } from "./estimates.ts";

const CONTEXT = 8_192;
const chat = (extra: Record<string, unknown>) => ({
  model: "m",
  messages: [{ role: "user", content: "hi" }],
  ...extra,
});
const bytes = (body: unknown) => Buffer.byteLength(JSON.stringify(body));

function refusal(kind: "chat" | "completion", body: Record<string, unknown>): { param: string | undefined } {
  try {
    costBounds(kind, body, bytes(body), CONTEXT);
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).status).toBe(400);
    return { param: (error as AppError).errors?.[0]?.path };
  }
  throw new Error("accepted");
}

describe("costBounds: what a request can cost", () => {
  it("bounds a chat request without max_tokens by the rest of the context window, per choice", () => {
    const body = chat({ n: 3 });
    const b = costBounds("chat", body, bytes(body), CONTEXT);
    expect(b.maxTokensPerSequence).toBe(CONTEXT - 1);
    expect(b.maxCompletionTokens).toBe(3 * (CONTEXT - 1));
    expect(b.maxPromptTokens).toBeGreaterThanOrEqual(bytes(body));
  });

  it("bounds a completions request without max_tokens by vLLM's default of 16, per prompt and choice", () => {
    const body = { model: "m", prompt: ["a", "b", "c"], n: 2 };
    const b = costBounds("completion", body, bytes(body), CONTEXT);
    expect(b).toMatchObject({
      prompts: 3,
      choicesPerPrompt: 2,
      maxTokensPerSequence: 16,
      maxCompletionTokens: 96,
    });
  });

  it("takes the larger of max_tokens and max_completion_tokens, and best_of above n", () => {
    const body = chat({ max_tokens: 10, max_completion_tokens: 40, n: 2, best_of: 5 });
    expect(costBounds("chat", body, bytes(body), CONTEXT)).toMatchObject({
      sequencesPerPrompt: 5,
      maxTokensPerSequence: 40,
      maxCompletionTokens: 200,
    });
  });

  it("counts a prompt of token ids as one prompt, and caps the prompt bound at the context per prompt", () => {
    const ids = { model: "m", prompt: [1, 2, 3] };
    expect(costBounds("completion", ids, bytes(ids), CONTEXT).prompts).toBe(1);
    const huge = chat({ messages: [{ role: "user", content: "x".repeat(1_000_000) }] });
    expect(costBounds("chat", huge, bytes(huge), CONTEXT).maxPromptTokens).toBe(CONTEXT);
  });

  it.each([
    ["max_tokens", 1.5],
    ["max_tokens", 0],
    ["max_tokens", -1],
    ["max_tokens", CONTEXT + 1],
    ["max_tokens", "10"],
    ["max_tokens", Number.POSITIVE_INFINITY],
    ["max_tokens", 2 ** 63],
    ["max_completion_tokens", 2.5],
    ["n", 0],
    ["n", 1.5],
    ["n", 129],
    ["n", true],
    ["best_of", 0],
    ["best_of", 129],
  ])("refuses %s = %s with a 400 naming the field", (field, value) => {
    expect(refusal("chat", chat({ [field]: value })).param).toBe(field);
  });

  it("refuses best_of below n, more prompts than allowed, and more sequences than vLLM serves", () => {
    expect(refusal("chat", chat({ n: 4, best_of: 2 })).param).toBe("best_of");
    const many = { model: "m", prompt: Array.from({ length: MAX_PROMPTS + 1 }, () => "p") };
    expect(refusal("completion", many).param).toBe("prompt");
    const sequences = { model: "m", prompt: Array.from({ length: 200 }, () => "p"), n: 100 };
    expect(refusal("completion", sequences).param).toBe("n");
  });

  it("takes null as absent, as OpenAI does", () => {
    const body = chat({ max_tokens: null, n: null, best_of: null });
    expect(costBounds("chat", body, bytes(body), CONTEXT).maxCompletionTokens).toBe(CONTEXT - 1);
  });

  it("prices the bounds exactly in picodollars", () => {
    const body = chat({ max_tokens: 100, n: 2 });
    const b = costBounds("chat", body, bytes(body), CONTEXT);
    const prices = { inputMicrosPerMtok: 120_000, outputMicrosPerMtok: 360_000 };
    expect(worstCaseCostPicos(prices, b)).toBe(BigInt(b.maxPromptTokens) * 120_000n + 200n * 360_000n);
  });
});
