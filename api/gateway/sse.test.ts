import { describe, expect, it } from "vitest";
import { createSseRewriter, type UsageCounts } from "./sse.ts";

async function run(input: string[], wanted: { includeUsage: boolean; continuousUsage: boolean }) {
  const usages: UsageCounts[] = [];
  const errors: string[] = [];
  let firstTokens = 0;
  const rewriter = createSseRewriter(
    { clientModel: "support-bot", replicaName: "ver_abc", wanted },
    {
      onUsage: (u) => usages.push(u),
      onFirstToken: () => firstTokens++,
      onStreamError: (m) => errors.push(m),
    },
  );
  const source = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const part of input) {
        controller.enqueue(new TextEncoder().encode(part));
      }
      controller.close();
    },
  });
  const text = await new Response(source.pipeThrough(rewriter)).text();
  return { text, usages, errors, firstTokens };
}

const chunk = (content: string, usage?: object) =>
  `data: ${JSON.stringify({ id: "chatcmpl-1", object: "chat.completion.chunk", model: "ver_abc", choices: [{ index: 0, delta: { content } }], ...(usage && { usage }) })}\n\n`;
const usageChunk = (p: number, c: number) =>
  `data: ${JSON.stringify({ id: "chatcmpl-1", object: "chat.completion.chunk", model: "ver_abc", choices: [], usage: { prompt_tokens: p, completion_tokens: c, total_tokens: p + c } })}\n\n`;

describe("SSE rewriter", () => {
  it("restores the client's model name, strips usage it did not ask for, and still reports usage", async () => {
    const out = await run(
      [
        chunk("Hel", { prompt_tokens: 5, completion_tokens: 1 }),
        chunk("lo", { prompt_tokens: 5, completion_tokens: 2 }),
        usageChunk(5, 2),
        "data: [DONE]\n\n",
      ],
      { includeUsage: false, continuousUsage: false },
    );
    expect(out.text).not.toContain("ver_abc");
    expect(out.text).not.toContain("usage");
    expect(out.text.match(/"model":"support-bot"/g)).toHaveLength(2);
    expect(out.text.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(out.usages.at(-1)).toEqual({ promptTokens: 5, completionTokens: 2, cachedTokens: 0 });
    expect(out.firstTokens).toBe(1);
  });

  it("keeps the final usage chunk when the client asked for include_usage", async () => {
    const out = await run(
      [chunk("a", { prompt_tokens: 3, completion_tokens: 1 }), usageChunk(3, 1), "data: [DONE]\n\n"],
      {
        includeUsage: true,
        continuousUsage: false,
      },
    );
    const events = out.text.split("\n\n").filter(Boolean);
    expect(events).toHaveLength(3);
    expect(JSON.parse(events[0]?.slice(6) ?? "{}").usage).toBeUndefined();
    expect(JSON.parse(events[1]?.slice(6) ?? "{}")).toMatchObject({
      choices: [],
      usage: { prompt_tokens: 3 },
    });
  });

  it("handles events split across network chunks at any byte", async () => {
    const whole = `${chunk("split", { prompt_tokens: 9, completion_tokens: 4 }) + usageChunk(9, 4)}data: [DONE]\n\n`;
    const pieces = whole.match(/[\s\S]{1,7}/g) ?? [];
    const out = await run(pieces, { includeUsage: false, continuousUsage: false });
    expect(out.text).toContain('"content":"split"');
    expect(out.usages.at(-1)?.completionTokens).toBe(4);
  });

  it("scrubs the replica-side name from a mid-stream error", async () => {
    const out = await run(
      [
        chunk("a"),
        `data: ${JSON.stringify({ error: { message: "adapter ver_abc failed", type: "InternalServerError", code: 500 } })}\n\n`,
        "data: [DONE]\n\n",
      ],
      { includeUsage: false, continuousUsage: false },
    );
    expect(out.text).not.toContain("ver_abc");
    expect(out.errors).toHaveLength(1);
    expect(out.errors[0]).toContain("adapter support-bot failed");
  });
});
