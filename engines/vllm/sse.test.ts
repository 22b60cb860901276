import { describe, expect, it } from "vitest";
import { DONE_EVENT, SseRewriter } from "./sse.ts";

type Wanted = { includeUsage: boolean; continuousUsage: boolean };
const NO_USAGE: Wanted = { includeUsage: false, continuousUsage: false };

function run(input: (string | Buffer)[], wanted: Wanted = NO_USAGE) {
  const rewriter = new SseRewriter({ clientModel: "support-bot", replicaName: "ver_abc", wanted });
  let text = "";
  let firstTokenAt: number | null = null;
  input.forEach((part, i) => {
    text += rewriter.push(typeof part === "string" ? Buffer.from(part) : part);
    if (firstTokenAt === null && rewriter.sawToken) {
      firstTokenAt = i;
    }
  });
  text += rewriter.end();
  return { text, rewriter, firstTokenAt };
}

const chunk = (content: string, usage?: object) =>
  `data: ${JSON.stringify({ id: "chatcmpl-1", object: "chat.completion.chunk", model: "ver_abc", choices: [{ index: 0, delta: { content } }], ...(usage && { usage }) })}\n\n`;
const usageChunk = (p: number, c: number) =>
  `data: ${JSON.stringify({ id: "chatcmpl-1", object: "chat.completion.chunk", model: "ver_abc", choices: [], usage: { prompt_tokens: p, completion_tokens: c, total_tokens: p + c } })}\n\n`;

describe("SSE rewriter", () => {
  it("restores the client's model name, strips usage it did not ask for, and still reports usage", () => {
    const out = run([
      chunk("Hel", { prompt_tokens: 5, completion_tokens: 1 }),
      chunk("lo", { prompt_tokens: 5, completion_tokens: 2 }),
      usageChunk(5, 2),
      DONE_EVENT,
    ]);
    expect(out.text).not.toContain("ver_abc");
    expect(out.text).not.toContain("usage");
    expect(out.text.match(/"model":"support-bot"/g)).toHaveLength(2);
    expect(out.rewriter.usage()).toEqual({ promptTokens: 5, completionTokens: 2, cachedTokens: 0 });
    expect(out.firstTokenAt).toBe(0);
  });

  it("holds back [DONE] for the caller to send once usage is durable, and ignores anything after it", () => {
    const out = run([chunk("a"), DONE_EVENT, chunk("late")]);
    expect(out.rewriter.sawDone).toBe(true);
    expect(out.text).not.toContain("[DONE]");
    expect(out.text).not.toContain("late");
    expect(out.text.split("\n\n").filter(Boolean)).toHaveLength(1);
  });

  it("keeps the final usage chunk when the client asked for include_usage", () => {
    const out = run([chunk("a", { prompt_tokens: 3, completion_tokens: 1 }), usageChunk(3, 1), DONE_EVENT], {
      includeUsage: true,
      continuousUsage: false,
    });
    const events = out.text.split("\n\n").filter(Boolean);
    expect(events).toHaveLength(2);
    expect(JSON.parse(events[0]?.slice(6) ?? "{}").usage).toBeUndefined();
    expect(JSON.parse(events[1]?.slice(6) ?? "{}")).toMatchObject({
      choices: [],
      usage: { prompt_tokens: 3 },
    });
  });

  it("keeps per-chunk usage when the client asked for continuous usage stats", () => {
    const out = run([chunk("a", { prompt_tokens: 3, completion_tokens: 1 }), usageChunk(3, 1)], {
      includeUsage: true,
      continuousUsage: true,
    });
    const first = JSON.parse(out.text.split("\n\n")[0]?.slice(6) ?? "{}");
    expect(first).toMatchObject({ model: "support-bot", usage: { completion_tokens: 1 } });
  });

  it("handles events split across network chunks at any byte, multi-byte characters included", () => {
    const whole = Buffer.from(
      `${chunk("héllo 🌍", { prompt_tokens: 9, completion_tokens: 4 }) + usageChunk(9, 4)}${DONE_EVENT}`,
    );
    for (const size of [1, 2, 3, 7]) {
      const pieces: Buffer[] = [];
      for (let i = 0; i < whole.length; i += size) {
        pieces.push(whole.subarray(i, i + size));
      }
      const out = run(pieces);
      expect(JSON.parse(out.text.slice(6)).choices[0].delta.content).toBe("héllo 🌍");
      expect(out.rewriter.usage()?.completionTokens).toBe(4);
      expect(out.rewriter.sawDone).toBe(true);
    }
  });

  it("reads CRLF line endings, multi-line data and passes comments through", () => {
    const json = JSON.stringify({ model: "ver_abc", choices: [{ index: 0, delta: { content: "x" } }] });
    const out = run([`: keep-alive\r\n\r\ndata: ${json.slice(0, 10)}\r\ndata:${json.slice(10)}\r\n\r\n`]);
    const events = out.text.split("\n\n").filter(Boolean);
    expect(events[0]).toBe(": keep-alive");
    expect(events[1]).toContain('"model":"support-bot"');
    expect(out.rewriter.sawToken).toBe(true);
  });

  it("rewrites an unterminated last event at the end of the body", () => {
    const out = run([chunk("a"), chunk("b").trimEnd()]);
    expect(out.text.match(/"model":"support-bot"/g)).toHaveLength(2);
  });

  it("does not count the usage-only chunk as the first token", () => {
    const out = run([usageChunk(1, 0)], { includeUsage: true, continuousUsage: false });
    expect(out.rewriter.sawToken).toBe(false);
    expect(out.rewriter.usage()?.promptTokens).toBe(1);
  });

  it("scrubs the replica-side name from a mid-stream error", () => {
    const out = run([
      chunk("a"),
      `data: ${JSON.stringify({ error: { message: "adapter ver_abc failed", type: "InternalServerError", code: 500 } })}\n\n`,
      DONE_EVENT,
    ]);
    expect(out.text).not.toContain("ver_abc");
    expect(out.rewriter.streamError).toContain("adapter support-bot failed");
  });
});

describe("SSE rewriter: a request generating several sequences", () => {
  const choiceChunk = (index: number, content: string, prompt: number, completion: number) =>
    `data: ${JSON.stringify({
      id: "cmpl-1",
      object: "text_completion",
      model: "ver_abc",
      choices: [{ index, text: content, logprobs: null, finish_reason: null }],
      usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
    })}\n\n`;
  const rewriter = (perPrompt: number, prompts: number) =>
    new SseRewriter({
      clientModel: "support-bot",
      replicaName: "ver_abc",
      wanted: NO_USAGE,
      choices: { perPrompt, prompts },
    });

  it("bills a stream cut before its usage chunk for every choice's tokens, not the last chunk's choice", () => {
    const r = rewriter(2, 1);
    // vLLM's continuous usage counts each chunk's own choice (previous_num_tokens[i]).
    for (const part of [choiceChunk(0, "a", 9, 1), choiceChunk(1, "b", 9, 1), choiceChunk(0, "c", 9, 2)]) {
      r.push(Buffer.from(part));
    }
    r.push(Buffer.from(choiceChunk(1, "d", 9, 2)));
    r.push(Buffer.from(choiceChunk(1, "e", 9, 3)));
    expect(r.usage()).toEqual({ promptTokens: 9, completionTokens: 5, cachedTokens: 0 });
    expect(r.unreportedPrompts()).toEqual([]);
  });

  it("sums each prompt of a batch once (choice i is prompt ⌊i / n⌋) and names the prompts not heard of", () => {
    const r = rewriter(2, 3);
    r.push(Buffer.from(choiceChunk(0, "a", 4, 1)));
    r.push(Buffer.from(choiceChunk(1, "b", 4, 1)));
    r.push(Buffer.from(choiceChunk(3, "c", 7, 1)));
    expect(r.usage()).toEqual({ promptTokens: 11, completionTokens: 3, cachedTokens: 0 });
    expect(r.unreportedPrompts()).toEqual([2]);
  });

  it("takes the engine's final usage chunk as the whole truth once it came", () => {
    const r = rewriter(2, 3);
    r.push(Buffer.from(choiceChunk(0, "a", 4, 1)));
    r.push(Buffer.from(usageChunk(20, 30)));
    expect(r.usage()).toEqual({ promptTokens: 20, completionTokens: 30, cachedTokens: 0 });
    expect(r.unreportedPrompts()).toEqual([]);
  });

  it("believes no choice index the request cannot have", () => {
    const r = rewriter(2, 1);
    r.push(Buffer.from(choiceChunk(0, "a", 4, 1)));
    r.push(Buffer.from(choiceChunk(99, "z", 4000, 9000)));
    expect(r.usage()).toEqual({ promptTokens: 4, completionTokens: 1, cachedTokens: 0 });
  });

  it("reports the one prompt as unreported while a single-choice stream has said nothing", () => {
    const single = new SseRewriter({ clientModel: "m", replicaName: null, wanted: NO_USAGE });
    expect(single.unreportedPrompts()).toEqual([0]);
    single.push(Buffer.from(chunk("x", { prompt_tokens: 3, completion_tokens: 1 })));
    expect(single.unreportedPrompts()).toEqual([]);
  });
});
