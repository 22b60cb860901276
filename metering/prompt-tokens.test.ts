import { monitorEventLoopDelay } from "node:perf_hooks";
import { describe, expect, it } from "vitest";
import { estimatePromptTokens } from "./prompt-tokens.ts";

describe("estimatePromptTokens", () => {
  it("counts an English chat prompt close to a BPE tokenizer's count, with the template's tokens", async () => {
    const body = { messages: [{ role: "user", content: "The quick brown fox jumps over the lazy dog." }] };
    const [tokens] = await estimatePromptTokens("chat", body, 8_192);
    // 10 words + '.' are 11 Llama 3 tokens; the template adds role headers and a preamble.
    expect(tokens).toBeGreaterThanOrEqual(11 + 5);
    expect(tokens).toBeLessThan(60);
  });

  it("counts each prompt of a completions batch, and token ids as they are", async () => {
    const counts = await estimatePromptTokens(
      "completion",
      { prompt: ["one two", "three four five six"] },
      8_192,
    );
    expect(counts).toHaveLength(2);
    expect((counts[1] ?? 0) > (counts[0] ?? 0)).toBe(true);
    expect(await estimatePromptTokens("completion", { prompt: [5, 6, 7, 8] }, 8_192)).toEqual([4]);
  });

  it("counts an 8 MiB prompt without holding the event loop, and never past the context window", async () => {
    const content = "lorem ipsum dolor sit amet ".repeat((8 * 1024 * 1024) / 27);
    await estimatePromptTokens("chat", { messages: [{ role: "user", content: "warm up" }] }, 8_192);
    const delay = monitorEventLoopDelay({ resolution: 5 });
    delay.enable();
    const [capped] = await estimatePromptTokens("chat", { messages: [{ role: "user", content }] }, 131_072);
    const [uncapped] = await estimatePromptTokens(
      "chat",
      { messages: [{ role: "user", content }] },
      100_000_000,
    );
    delay.disable();
    expect(capped).toBe(131_072);
    expect(uncapped).toBeGreaterThan(1_000_000);
    expect(delay.max / 1e6).toBeLessThan(250);
  });
});
