// A minimal OpenAI-compatible upstream in a process of its own: non-stream chat completions answer at
// once; streams send their first token after TTFT_MS, then a few more (shared.ts). It also answers the vLLM
// endpoints a fleet poller touches. Prints its URL on stdout once listening.
// Usage: node bench/gateway/upstream.ts [port]
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { MORE_TOKENS, TOKEN_GAP_MS, TTFT_MS } from "./shared.ts";

const UPSTREAM_BASE_MODEL = "Qwen/Qwen2.5-7B-Instruct-AWQ";
const PROMPT_TOKENS = 12;
const COMPLETION_TOKENS = 1 + MORE_TOKENS;

const created = Math.floor(Date.now() / 1000);
let sequence = 0;

function completion(model: string): string {
  return JSON.stringify({
    id: `chatcmpl-bench${++sequence}`,
    object: "chat.completion",
    created,
    model,
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: "Hello! How can I help you today?" },
        logprobs: null,
        finish_reason: "stop",
        stop_reason: null,
      },
    ],
    usage: {
      prompt_tokens: PROMPT_TOKENS,
      total_tokens: PROMPT_TOKENS + COMPLETION_TOKENS,
      completion_tokens: COMPLETION_TOKENS,
    },
  });
}

function usage(completionTokens: number) {
  return {
    prompt_tokens: PROMPT_TOKENS,
    total_tokens: PROMPT_TOKENS + completionTokens,
    completion_tokens: completionTokens,
  };
}

/** vLLM's stream shape: role + first token, more tokens, finish, then the usage-only chunk if asked. */
function stream(res: ServerResponse, model: string, options: Record<string, unknown> | undefined): void {
  const id = `chatcmpl-bench${++sequence}`;
  const includeUsage = options?.include_usage === true;
  const continuous = includeUsage && options?.continuous_usage_stats === true;
  const chunk = (delta: Record<string, unknown>, finish: string | null, tokens: number) =>
    `data: ${JSON.stringify({
      id,
      object: "chat.completion.chunk",
      created,
      model,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      ...(continuous && { usage: usage(tokens) }),
    })}\n\n`;
  res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
  let sent = 0;
  const next = () => {
    if (res.destroyed) {
      return;
    }
    sent++;
    res.write(chunk(sent === 1 ? { role: "assistant", content: "Hello" } : { content: " tok" }, null, sent));
    if (sent <= MORE_TOKENS) {
      setTimeout(next, TOKEN_GAP_MS);
      return;
    }
    res.write(chunk({}, "stop", sent));
    if (includeUsage) {
      res.write(
        `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model, choices: [], usage: usage(sent) })}\n\n`,
      );
    }
    res.end("data: [DONE]\n\n");
  };
  setTimeout(next, TTFT_MS);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    req.on("data", (d: Buffer) => parts.push(d));
    req.on("end", () => resolve(Buffer.concat(parts).toString("utf8")));
    req.on("error", reject);
  });
}

function sendJson(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

const server = createServer(async (req, res) => {
  const path = req.url?.split("?")[0] ?? "/";
  if (req.method === "POST" && (path === "/v1/chat/completions" || path === "/chat/completions")) {
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(await readBody(req)) as Record<string, unknown>;
    } catch {
      sendJson(res, 400, JSON.stringify({ object: "error", message: "bad JSON", type: "BadRequestError" }));
      return;
    }
    const model = typeof body.model === "string" ? body.model : UPSTREAM_BASE_MODEL;
    if (body.stream === true) {
      stream(res, model, body.stream_options as Record<string, unknown> | undefined);
    } else {
      sendJson(res, 200, completion(model));
    }
    return;
  }
  if (req.method === "GET" && path === "/health") {
    res.writeHead(200, { "content-length": 0 });
    res.end();
    return;
  }
  if (req.method === "GET" && path === "/v1/models") {
    sendJson(
      res,
      200,
      JSON.stringify({
        object: "list",
        data: [
          {
            id: UPSTREAM_BASE_MODEL,
            object: "model",
            created,
            owned_by: "vllm",
            root: UPSTREAM_BASE_MODEL,
            parent: null,
            max_model_len: 32768,
          },
        ],
      }),
    );
    return;
  }
  if (req.method === "GET" && path === "/metrics") {
    const text =
      `vllm:num_requests_running{model_name="${UPSTREAM_BASE_MODEL}"} 0.0\n` +
      `vllm:num_requests_waiting{model_name="${UPSTREAM_BASE_MODEL}"} 0.0\n`;
    res.writeHead(200, { "content-type": "text/plain; version=0.0.4", "content-length": text.length });
    res.end(text);
    return;
  }
  sendJson(res, 404, JSON.stringify({ detail: "Not Found" }));
});
// Longer than any client's idle timeout, so that a pooled connection is never closed under a request.
server.keepAliveTimeout = 65_000;
server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => {
  process.stdout.write(`http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
});
process.on("SIGTERM", () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
