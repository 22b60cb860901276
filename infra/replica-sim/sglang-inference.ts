import { randomBytes } from "node:crypto";
import type { Context, Hono } from "hono";
import type { FinishReason, SamplingParams } from "./engine.ts";
import { json } from "./http-util.ts";
import { type AdapterLease, acquireAdapter, type SglangState } from "./sglang-state.ts";
import type { ChatMessage } from "./tokenizer.ts";

/**
 * `/v1/chat/completions` and `/v1/completions` as SGLang serves them (sgl-project/sglang):
 *
 * - adapter choice (entrypoints/openai/serving_base.py `_parse_model_parameter` /
 *   `_resolve_lora_path`, index excerpt 53984462520): `model` is split on its first ":" into base and
 *   adapter (each stripped, an empty adapter is none); an adapter named there wins over the
 *   `lora_path` field. The base part is not checked here (the pinned serving_base.py @ c5695a4b does
 *   not check it; a newer, unpinned copy answers 404 for an unknown base).
 * - errors (serving_base.py @ c5695a4b `create_error_response`): a flat
 *   `{"object":"error","message","type","param","code"}`; a ValueError raised while the request is
 *   generated (unknown adapter, context length) is 400 `BadRequestError` without streaming
 *   (serving_chat.py @ 0c078e6f `_handle_non_streaming_request`), and with streaming it arrives
 *   inside a 200 stream as `data: {"error": {…}}` followed by `data: [DONE]`
 *   (`_generate_chat_stream`: `except ValueError as e: … yield f"data: {error}\n\n"`).
 * - streams (serving_chat.py @ 0c078e6f): per choice a first chunk `delta {role: "assistant",
 *   content: ""}`, content chunks (each with `usage` when `stream_options.continuous_usage_stats`,
 *   which unlike vLLM does not need include_usage), then one chunk with an empty delta and the
 *   finish_reason, then with `include_usage` a chunk with `choices: []` and the usage, then
 *   `data: [DONE]`. `model` echoes the request's `model`; `id` is the request id (uuid4 hex).
 *
 * The completions stream (serving_completions.py @ 7190e6fe) sends one chunk per engine output with
 * the finish_reason on the last, then the usage chunk (dumped with exclude_none) and [DONE].
 */

type Kind = "chat" | "completion";

class SglangValueError extends Error {}

/** ErrorResponse as serving_base.py @ c5695a4b writes it. */
function errorBody(message: string, type = "BadRequestError", code = 400) {
  return { object: "error", message, type, param: null, code };
}

export function sglangError(message: string, type = "BadRequestError", code = 400): Response {
  return json(errorBody(message, type, code), code);
}

/** The RequestValidationError handler of http_server.py @ 0270cffc: 400, type "Bad Request". */
export function sglangValidationError(detail: string): Response {
  return sglangError(detail, "Bad Request", 400);
}

type JsonBody = Record<string, unknown>;

/** `validate_json_request` (http_server.py @ 0270cffc), then the body parsed as a JSON object. */
export async function readSglangJson(
  c: Context,
): Promise<{ ok: true; body: JsonBody } | { ok: false; res: Response }> {
  const media = (c.req.header("content-type") ?? "").toLowerCase().split(";")[0]?.trim() ?? "";
  if (media !== "application/json") {
    return {
      ok: false,
      res: sglangValidationError(
        "[{'loc': ['header', 'content-type'], 'msg': \"Unsupported Media Type: Only 'application/json' is allowed\", 'type': 'value_error'}]",
      ),
    };
  }
  const text = await c.req.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return {
      ok: false,
      res: sglangValidationError(
        "[{'type': 'json_invalid', 'loc': ('body', 0), 'msg': 'JSON decode error'}]",
      ),
    };
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return {
      ok: false,
      res: sglangValidationError(
        "[{'type': 'model_attributes_type', 'loc': ('body',), 'msg': 'Input should be a valid dictionary or object to extract fields from'}]",
      ),
    };
  }
  return { ok: true, body: parsed as JsonBody };
}

function missing(field: string): Response {
  return sglangValidationError(`[{'type': 'missing', 'loc': ('body', '${field}'), 'msg': 'Field required'}]`);
}

function textOf(content: unknown): string {
  if (typeof content === "string") {
    return content;
  }
  if (Array.isArray(content)) {
    return content
      .map((p) => (typeof p === "object" && p !== null ? (p as { text?: unknown }).text : undefined))
      .filter((t): t is string => typeof t === "string")
      .join("\n");
  }
  return "";
}

/** `_parse_model_parameter`: the adapter after the first ":", stripped, or null. */
export function adapterFromModel(model: string): string | null {
  const i = model.indexOf(":");
  if (i < 0) {
    return null;
  }
  const adapter = model.slice(i + 1).trim();
  return adapter === "" ? null : adapter;
}

function fnv(seed: number, values: readonly number[]): number {
  let h = seed >>> 0;
  for (const v of values) {
    h = Math.imul(h ^ v, 0x01000193) >>> 0;
  }
  return h;
}

function fnvString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  }
  return h >>> 0;
}

const usage = (prompt: number, completion: number) => ({
  prompt_tokens: prompt,
  total_tokens: prompt + completion,
  completion_tokens: completion,
  prompt_tokens_details: null,
});

const SSE_HEADERS = { "content-type": "text/event-stream; charset=utf-8" };

async function handle(c: Context, s: SglangState, kind: Kind): Promise<Response> {
  const read = await readSglangJson(c);
  if (!read.ok) {
    return read.res;
  }
  const b = read.body;
  const model = typeof b.model === "string" ? b.model : "default";
  let prompt: number[];
  if (kind === "chat") {
    if (b.messages === undefined) {
      return missing("messages");
    }
    if (!Array.isArray(b.messages)) {
      return sglangValidationError(
        "[{'type': 'list_type', 'loc': ('body', 'messages'), 'msg': 'Input should be a valid list'}]",
      );
    }
    // serving_chat.py @ 0c078e6f `_validate_request`.
    if (b.messages.length === 0) {
      return sglangError("Messages cannot be empty.");
    }
    const msgs: ChatMessage[] = b.messages.map((m: unknown) => {
      const o = (typeof m === "object" && m !== null ? m : {}) as { role?: unknown; content?: unknown };
      return { role: String(o.role ?? "user"), content: textOf(o.content) };
    });
    prompt = s.tok.encode(s.tok.renderChat(msgs, { addGenerationPrompt: true }), { addSpecialTokens: false });
  } else {
    if (b.prompt === undefined) {
      return missing("prompt");
    }
    if (typeof b.prompt === "string") {
      prompt = s.tok.encode(b.prompt, { addSpecialTokens: true });
    } else if (Array.isArray(b.prompt) && b.prompt.length > 0 && b.prompt.every((t) => Number.isInteger(t))) {
      prompt = b.prompt as number[];
    } else {
      return sglangError("The simulator serves one prompt per request: a string or a list of token ids.");
    }
  }
  const n = typeof b.n === "number" ? b.n : 1;
  if (n !== 1) {
    return sglangError("The simulator serves n = 1 only.");
  }
  const stream = b.stream === true;
  const so = (typeof b.stream_options === "object" && b.stream_options !== null ? b.stream_options : {}) as {
    include_usage?: unknown;
    continuous_usage_stats?: unknown;
  };
  const includeUsage = stream && so.include_usage === true;
  const continuous = stream && so.continuous_usage_stats === true;
  const maxTokensRaw = kind === "chat" ? (b.max_completion_tokens ?? b.max_tokens) : b.max_tokens;
  const maxTokens = typeof maxTokensRaw === "number" ? maxTokensRaw : undefined;
  const ctx = s.cfg.maxModelLen;
  // serving_chat.py @ 0c078e6f `_validate_request`: "max_completion_tokens is too large".
  if (kind === "chat" && maxTokens !== undefined && maxTokens > ctx) {
    return sglangError(
      `max_completion_tokens is too large: ${maxTokens}.This model supports at most ${ctx} completion tokens.`,
    );
  }
  const explicitLora = typeof b.lora_path === "string" ? b.lora_path : null;
  const adapterName = adapterFromModel(model) ?? explicitLora;
  const rid = randomBytes(16).toString("hex");
  const created = Math.floor(Date.now() / 1000);

  // Everything below runs inside tokenizer_manager.generate_request: a ValueError is a 400 without
  // streaming and an in-stream error with it.
  let lease: AdapterLease | null = null;
  const prepare = async (): Promise<void> => {
    // TokenizerManager._validate_one_request (text from memory, not pinned in the index).
    if (prompt.length >= ctx) {
      throw new SglangValueError(
        `The input (${prompt.length} tokens) is longer than the model's context length (${ctx} tokens).`,
      );
    }
    if (maxTokens !== undefined && prompt.length + maxTokens > ctx) {
      throw new SglangValueError(
        `Requested token count exceeds the model's maximum context length of ${ctx} tokens. You requested a total of ${prompt.length + maxTokens} tokens: ${prompt.length} tokens from the input messages and ${maxTokens} tokens for the completion. Please reduce the number of tokens in the input messages or the completion to fit within the limit.`,
      );
    }
    if (adapterName !== null) {
      try {
        lease = await acquireAdapter(s, adapterName);
      } catch (err) {
        throw new SglangValueError((err as Error).message);
      }
    }
  };
  const nat = s.cfg.naturalOutputTokens;
  const promptHash = fnv(fnvString(adapterName ?? ""), prompt);
  const seed = typeof b.seed === "number" ? fnv(promptHash, [b.seed]) : promptHash;
  const params: SamplingParams = {
    // CompletionRequest defaults max_tokens to 16; chat generates until the context is full.
    maxTokens: maxTokens ?? (kind === "completion" ? 16 : ctx - prompt.length),
    minTokens: typeof b.min_tokens === "number" ? b.min_tokens : 0,
    ignoreEos: b.ignore_eos === true,
    eosTokenId: kind === "chat" ? s.tok.eotTokenId : s.tok.eosTokenId,
    naturalTokens: nat.min + (promptHash % (nat.max - nat.min + 1)),
    seed,
  };
  const outputIds: number[] = [];
  let text = "";
  const nextDelta = (ids: readonly number[]): string => {
    const before = outputIds.length;
    outputIds.push(...ids);
    const from = Math.max(0, before - 4);
    const prefix = s.tok.decode(outputIds.slice(from, before), { skipSpecialTokens: true });
    const window = s.tok.decode(outputIds.slice(from), { skipSpecialTokens: true });
    const delta = window.slice(prefix.length);
    text += delta;
    return delta;
  };
  // finish_reason {"type": "stop", "matched": <eos id>} → matched_stop; "length" has none.
  const matchedStop = (f: FinishReason | null) => (f === "stop" ? params.eosTokenId : null);
  const engineId = `sglang-${rid}`;
  const signal = c.req.raw.signal;

  if (!stream) {
    s.inFlight++;
    try {
      try {
        await prepare();
      } catch (err) {
        return sglangError((err as Error).message);
      }
      const lora = (lease as AdapterLease | null)?.adapter.lora ?? null;
      const result = await new Promise<{ finish: FinishReason } | { error: string } | { aborted: true }>(
        (done) => {
          s.engine.addRequest({
            id: engineId,
            lora,
            promptTokenIds: prompt,
            params,
            listener: {
              onOutput(out) {
                nextDelta(out.newTokenIds);
                if (out.finishReason) {
                  done({ finish: out.finishReason });
                }
              },
              onError(err) {
                done({ error: err.message });
              },
            },
          });
          signal.addEventListener("abort", () => {
            if (s.engine.abort(engineId)) {
              s.abortedRequestIds.push(rid);
            }
            done({ aborted: true });
          });
        },
      );
      if ("error" in result) {
        return sglangError(`Internal server error: ${result.error}`, "InternalServerError", 500);
      }
      if ("aborted" in result) {
        return sglangError("Client disconnected");
      }
      const u = usage(prompt.length, outputIds.length);
      if (kind === "chat") {
        return json({
          id: rid,
          object: "chat.completion",
          created,
          model,
          choices: [
            {
              index: 0,
              message: {
                role: "assistant",
                content: text || null,
                reasoning_content: null,
                tool_calls: null,
              },
              logprobs: null,
              finish_reason: result.finish,
              matched_stop: matchedStop(result.finish),
              hidden_states: null,
            },
          ],
          usage: u,
          metadata: { weight_version: "default" },
        });
      }
      return json({
        id: rid,
        object: "text_completion",
        created,
        model,
        choices: [
          {
            index: 0,
            text,
            logprobs: null,
            finish_reason: result.finish,
            matched_stop: matchedStop(result.finish),
          },
        ],
        usage: u,
        metadata: { weight_version: "default" },
      });
    } finally {
      (lease as AdapterLease | null)?.release();
      s.inFlight--;
    }
  }

  const encoder = new TextEncoder();
  let controller: ReadableStreamDefaultController<Uint8Array> | null = null;
  let closed = false;
  const send = (data: unknown): void => {
    if (!closed && controller) {
      controller.enqueue(
        encoder.encode(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`),
      );
    }
  };
  const finishStream = (): void => {
    if (!closed && controller) {
      send("[DONE]");
      closed = true;
      controller.close();
      s.inFlight--;
      (lease as AdapterLease | null)?.release();
    }
  };
  const object = kind === "chat" ? "chat.completion.chunk" : "text_completion";
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => ({
    id: rid,
    object,
    created: Math.floor(Date.now() / 1000),
    model,
    choices,
    usage: null,
    ...extra,
  });
  const delta = (role: string | null, content: string | null) => ({
    role,
    content,
    reasoning_content: null,
    tool_calls: null,
  });
  let first = true;
  const body = new ReadableStream<Uint8Array>({
    start(ctrl) {
      controller = ctrl;
    },
    cancel() {
      if (!closed) {
        closed = true;
        s.inFlight--;
        if (s.engine.abort(engineId)) {
          s.abortedRequestIds.push(rid);
        }
        (lease as AdapterLease | null)?.release();
      }
    },
  });
  s.inFlight++;
  void (async () => {
    try {
      await prepare();
    } catch (err) {
      // create_streaming_error_response: json.dumps({"error": ErrorResponse(...).model_dump()}).
      send({ error: errorBody((err as Error).message) });
      finishStream();
      return;
    }
    if (closed) {
      (lease as AdapterLease | null)?.release();
      return;
    }
    s.engine.addRequest({
      id: engineId,
      lora: (lease as AdapterLease | null)?.adapter.lora ?? null,
      promptTokenIds: prompt,
      params,
      listener: {
        onOutput(out) {
          if (first && kind === "chat") {
            first = false;
            send(
              chunk([
                {
                  index: 0,
                  delta: delta("assistant", ""),
                  logprobs: null,
                  finish_reason: null,
                  matched_stop: null,
                },
              ]),
            );
          }
          const d = nextDelta(out.newTokenIds);
          const fin = out.finishReason;
          const cont = continuous ? { usage: usage(prompt.length, outputIds.length) } : {};
          if (kind === "chat") {
            if (d) {
              send(
                chunk(
                  [
                    {
                      index: 0,
                      delta: delta(null, d),
                      logprobs: null,
                      finish_reason: null,
                      matched_stop: null,
                    },
                  ],
                  cont,
                ),
              );
            }
            if (fin) {
              send(
                chunk([
                  {
                    index: 0,
                    delta: delta(null, null),
                    logprobs: null,
                    finish_reason: fin,
                    matched_stop: matchedStop(fin),
                  },
                ]),
              );
            }
          } else {
            // serving_completions.py @ 7190e6fe: one chunk per engine output, the finish_reason on
            // the last (its continuous usage is from a newer, unpinned copy, excerpt 505810557).
            send(
              chunk(
                [{ index: 0, text: d, logprobs: null, finish_reason: fin, matched_stop: matchedStop(fin) }],
                cont,
              ),
            );
          }
          if (fin) {
            if (includeUsage) {
              const u = usage(prompt.length, outputIds.length);
              if (kind === "chat") {
                send(chunk([], { usage: u }));
              } else {
                // The completions usage chunk is dumped with `exclude_none=True` (serving_completions.py @ 7190e6fe).
                const { prompt_tokens_details: _none, ...set } = u;
                send({
                  id: rid,
                  object,
                  created: Math.floor(Date.now() / 1000),
                  model,
                  choices: [],
                  usage: set,
                });
              }
            }
            finishStream();
          }
        },
        onError(err) {
          send({ error: errorBody(`Internal server error: ${err.message}`, "InternalServerError", 500) });
          finishStream();
        },
      },
    });
  })();
  signal.addEventListener("abort", () => {
    if (!closed) {
      closed = true;
      s.inFlight--;
      if (s.engine.abort(engineId)) {
        s.abortedRequestIds.push(rid);
      }
      (lease as AdapterLease | null)?.release();
    }
  });
  return new Response(body, { status: 200, headers: SSE_HEADERS });
}

export function registerSglangInference(app: Hono, s: SglangState): void {
  app.post("/v1/chat/completions", (c) => handle(c, s, "chat"));
  app.post("/v1/completions", (c) => handle(c, s, "completion"));
}
