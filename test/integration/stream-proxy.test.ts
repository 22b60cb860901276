import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ForwardOutcome, forwardCompletion } from "../../api/gateway/forward/index.ts";
import { eventually } from "../eventually.ts";

// The streaming proxy between two real sockets: an upstream speaking vLLM's SSE shape (continuous
// usage on every chunk, a usage-only chunk, [DONE]) and the Response the gateway hands its client.

type Behaviour = (req: IncomingMessage, res: ServerResponse) => void;

let upstream: Server;
let baseUrl = "";
let behaviour: Behaviour = () => {};
const upstreamClosed: boolean[] = [];
const dispatcher = new Agent();

const event = (content: string, completionTokens: number, extra: object = {}) =>
  `data: ${JSON.stringify({
    id: "chatcmpl-1",
    object: "chat.completion.chunk",
    model: "ver_replica_name",
    choices: [{ index: 0, delta: { content }, finish_reason: null }],
    usage: { prompt_tokens: 7, completion_tokens: completionTokens, total_tokens: 7 + completionTokens },
    ...extra,
  })}\n\n`;
const usageOnly = (completionTokens: number) =>
  `data: ${JSON.stringify({
    id: "chatcmpl-1",
    object: "chat.completion.chunk",
    model: "ver_replica_name",
    choices: [],
    usage: { prompt_tokens: 7, completion_tokens: completionTokens, total_tokens: 7 + completionTokens },
  })}\n\n`;

beforeAll(async () => {
  upstream = createServer((req, res) => {
    req.resume();
    res.on("close", () => upstreamClosed.push(!res.writableFinished));
    req.on("end", () => behaviour(req, res));
  });
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", () => r()));
  baseUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`;
});
afterAll(async () => {
  await new Promise<void>((r) => upstream.close(() => r()));
  await dispatcher.close();
});

function forward(
  onFinish: (outcome: ForwardOutcome) => Promise<void>,
  clientSignal = new AbortController().signal,
) {
  return forwardCompletion({
    request: {
      path: "/v1/chat/completions",
      body: { model: "support-bot", messages: [{ role: "user", content: "hi" }], stream: true },
      clientModel: "support-bot",
      upstreamRequestId: "req_stream_test",
      clientSignal,
    },
    upstreams: { targets: [{ replicaId: "rep_test", baseUrl, loraName: "ver_replica_name" }] },
    settings: { dispatcher, maxAttempts: 1, headersTimeoutMs: 5_000, bodyTimeoutMs: 2_000 },
    report: async (event) => {
      if (event.kind === "finished") {
        await onFinish(event.outcome);
      }
    },
  });
}

/** Reads the client's stream, waiting `pauseMs` after each chunk; `onChunk` sees the text so far. */
async function readSlowly(res: Response, pauseMs: number, onChunk: (text: string) => void = () => {}) {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      return text + decoder.decode();
    }
    text += decoder.decode(value, { stream: true });
    onChunk(text);
    await new Promise((r) => setTimeout(r, pauseMs)); // a slow reader is the point: the proxy must pause
  }
}

describe("the streaming proxy", () => {
  it("delivers every event in order to a slow reader, renamed, and sends [DONE] only after usage is recorded", async () => {
    const count = 300;
    behaviour = (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      // One event per network write, far faster than the client reads: the proxy must pause the replica.
      let i = 0;
      const next = () => {
        if (++i <= count) {
          res.write(event(`t${i} `, i));
          setImmediate(next);
          return;
        }
        res.write(usageOnly(count));
        res.end("data: [DONE]\n\n");
      };
      next();
    };
    const outcomes: ForwardOutcome[] = [];
    const res = await forward(async (outcome) => {
      await new Promise((r) => setTimeout(r, 50)); // a slow recorder: [DONE] must still wait for it
      outcomes.push(outcome);
    });
    let recordedWhenDone: boolean | null = null;
    const text = await readSlowly(res, 3, (sofar) => {
      if (recordedWhenDone === null && sofar.includes("[DONE]")) {
        recordedWhenDone = outcomes.length === 1;
      }
    });
    expect(recordedWhenDone).toBe(true);
    const events = text.split("\n\n").filter(Boolean);
    expect(events).toHaveLength(count + 1);
    expect(events.at(-1)).toBe("data: [DONE]");
    const contents = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)).choices[0].delta.content);
    expect(contents).toEqual(Array.from({ length: count }, (_, i) => `t${i + 1} `));
    expect(text).not.toContain("ver_replica_name");
    expect(text).not.toContain('"usage"');
    expect(outcomes).toHaveLength(1);
    expect(outcomes[0]).toMatchObject({ status: "ok", usage: { promptTokens: 7, completionTokens: count } });
  });

  it("ends with an error event, once, when the replica's stream breaks off mid-way", async () => {
    behaviour = (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(event("partial", 1));
      setTimeout(() => res.socket?.destroy(), 20);
    };
    const outcomes: ForwardOutcome[] = [];
    const res = await forward(async (outcome) => {
      outcomes.push(outcome);
    });
    const text = await readSlowly(res, 0);
    const events = text.split("\n\n").filter(Boolean);
    expect(JSON.parse(events[0]?.slice(6) ?? "{}").choices[0].delta.content).toBe("partial");
    expect(JSON.parse(events.at(-1)?.slice(6) ?? "{}")).toMatchObject({
      error: { code: "upstream_stream_error" },
    });
    expect(text).not.toContain("[DONE]");
    expect(outcomes).toHaveLength(1);
    expect(outcomes[0]).toMatchObject({ status: "error", usage: { completionTokens: 1 } });
  });

  it("aborts the replica's request and bills what it generated when the client cancels", async () => {
    behaviour = (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      let i = 0;
      const timer = setInterval(() => {
        i++;
        if (!res.write(event(`t${i}`, i))) {
          return;
        }
      }, 2);
      res.on("close", () => clearInterval(timer));
    };
    const closedBefore = upstreamClosed.length;
    const outcomes: ForwardOutcome[] = [];
    const client = new AbortController();
    const res = await forward(async (outcome) => {
      outcomes.push(outcome);
    }, client.signal);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    await reader.read();
    await reader.cancel("client went away");
    client.abort();
    await eventually(() => upstreamClosed.length > closedBefore && outcomes.length > 0, 2_000, 10);
    expect(upstreamClosed.slice(closedBefore)).toEqual([true]);
    expect(outcomes).toHaveLength(1);
    expect(outcomes[0]?.status).toBe("cancelled");
    expect(outcomes[0]?.usage?.completionTokens).toBeGreaterThanOrEqual(1);
  });

  it("reports a stream that ends without [DONE] as an error, to the client and in the outcome", async () => {
    behaviour = (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.end(event("cut", 1));
    };
    const outcomes: ForwardOutcome[] = [];
    const text = await readSlowly(
      await forward(async (outcome) => {
        outcomes.push(outcome);
      }),
      0,
    );
    const events = text.split("\n\n").filter(Boolean);
    expect(events).toHaveLength(2);
    expect(JSON.parse(events[1]?.slice(6) ?? "{}")).toMatchObject({
      error: { code: "upstream_stream_error" },
    });
    expect(outcomes.map((o) => o.status)).toEqual(["error"]);
  });

  it("stops reading an answer that is not an event stream at all, and says so", async () => {
    behaviour = (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.end("x".repeat(3 * 1024 * 1024));
    };
    const outcomes: ForwardOutcome[] = [];
    const text = await readSlowly(
      await forward(async (outcome) => {
        outcomes.push(outcome);
      }),
      0,
    );
    expect(text.length).toBeLessThan(1000);
    expect(text).toContain("not a server-sent event stream");
    expect(outcomes.map((o) => o.status)).toEqual(["error"]);
  });
});
