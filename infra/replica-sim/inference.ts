import type { Context, Hono } from "hono";
import { EngineDeadError, type EngineListener, type FinishReason, type SamplingParams } from "./engine.ts";
import {
  errorResponse,
  type JsonBody,
  json,
  optBool,
  optInt,
  optString,
  readJsonBody,
  validationError,
} from "./http-util.ts";
import { type ReplicaState, randomId, resolveModel } from "./state.ts";
import type { ChatMessage } from "./tokenizer.ts";

type Kind = "chat" | "completion";

interface Parsed {
  kind: Kind;
  model: string | undefined;
  promptIds: number[];
  stream: boolean;
  includeUsage: boolean;
  continuousUsage: boolean;
  maxTokens: number | undefined;
  minTokens: number;
  ignoreEos: boolean;
  seed: number | undefined;
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

function contentText(content: unknown): string | null {
  if (typeof content === "string") {
    return content;
  }
  if (content === null || content === undefined) {
    return "";
  }
  if (Array.isArray(content)) {
    const texts: string[] = [];
    for (const part of content) {
      if (typeof part === "object" && part !== null && (part as { type?: unknown }).type === "text") {
        const t = (part as { text?: unknown }).text;
        if (typeof t === "string") {
          texts.push(t);
          continue;
        }
      }
      return null;
    }
    return texts.join("\n");
  }
  return null;
}

function parseMessages(
  s: ReplicaState,
  body: JsonBody,
): { ok: true; messages: ChatMessage[] } | { ok: false; res: Response } {
  const raw = body.messages;
  if (raw === undefined) {
    return {
      ok: false,
      res: validationError(s.style, { type: "missing", loc: ["body", "messages"], msg: "Field required" }),
    };
  }
  if (!Array.isArray(raw)) {
    return {
      ok: false,
      res: validationError(s.style, {
        type: "list_type",
        loc: ["body", "messages"],
        msg: "Input should be a valid list",
      }),
    };
  }
  const messages: ChatMessage[] = [];
  for (const [i, m] of raw.entries()) {
    const role = typeof m === "object" && m !== null ? (m as { role?: unknown }).role : undefined;
    const content =
      typeof m === "object" && m !== null ? contentText((m as { content?: unknown }).content) : null;
    if (typeof role !== "string" || content === null) {
      return {
        ok: false,
        res: validationError(s.style, {
          type: "union_tag_invalid",
          loc: ["body", "messages", i],
          msg: "Input should be a valid chat message with a role and text content",
        }),
      };
    }
    messages.push({ role, content });
  }
  return { ok: true, messages };
}

function parsePrompt(
  s: ReplicaState,
  body: JsonBody,
): { ok: true; ids: number[] } | { ok: false; res: Response } {
  let p = body.prompt;
  if (Array.isArray(p) && p.length === 1 && typeof p[0] === "string") {
    p = p[0];
  }
  if (typeof p === "string") {
    return { ok: true, ids: s.tok.encode(p, { addSpecialTokens: true }) };
  }
  if (
    Array.isArray(p) &&
    p.length > 0 &&
    p.every((t) => Number.isInteger(t) && t >= 0 && t < s.tok.vocabSize)
  ) {
    return { ok: true, ids: p as number[] };
  }
  if (p === undefined) {
    return {
      ok: false,
      res: validationError(s.style, { type: "missing", loc: ["body", "prompt"], msg: "Field required" }),
    };
  }
  return {
    ok: false,
    res: errorResponse(
      s.style,
      400,
      "The simulator takes one prompt per request (a string or token ids).",
      "BadRequestError",
      "prompt",
    ),
  };
}

function parseRequest(s: ReplicaState, kind: Kind, body: JsonBody): Parsed | Response {
  const model = optString(s.style, body, "model");
  if (!model.ok) {
    return model.res;
  }
  const stream = optBool(s.style, body, "stream");
  if (!stream.ok) {
    return stream.res;
  }
  const so = body.stream_options;
  if (so !== undefined && so !== null && stream.value !== true) {
    return validationError(
      s.style,
      "Value error, Stream options can only be defined when `stream=True`.",
      "stream_options",
    );
  }
  if (so !== undefined && so !== null && (typeof so !== "object" || Array.isArray(so))) {
    return validationError(s.style, {
      type: "model_type",
      loc: ["body", "stream_options"],
      msg: "Input should be an object",
    });
  }
  const opts = (so ?? {}) as { include_usage?: unknown; continuous_usage_stats?: unknown };
  const maxTokensKey =
    kind === "chat" && body.max_completion_tokens != null ? "max_completion_tokens" : "max_tokens";
  const maxTokens = optInt(s.style, body, maxTokensKey);
  if (!maxTokens.ok) {
    return maxTokens.res;
  }
  if (maxTokens.value !== undefined && maxTokens.value < 1) {
    return errorResponse(
      s.style,
      400,
      `max_tokens must be at least 1, got ${maxTokens.value}.`,
      "BadRequestError",
      "max_tokens",
    );
  }
  const minTokens = optInt(s.style, body, "min_tokens");
  if (!minTokens.ok) {
    return minTokens.res;
  }
  const ignoreEos = optBool(s.style, body, "ignore_eos");
  if (!ignoreEos.ok) {
    return ignoreEos.res;
  }
  const n = optInt(s.style, body, "n");
  if (!n.ok) {
    return n.res;
  }
  if (n.value !== undefined && n.value !== 1) {
    return errorResponse(s.style, 400, "The replica simulator only supports n=1.", "BadRequestError", "n");
  }
  const seed = optInt(s.style, body, "seed");
  if (!seed.ok) {
    return seed.res;
  }
  let promptIds: number[];
  if (kind === "chat") {
    const msgs = parseMessages(s, body);
    if (!msgs.ok) {
      return msgs.res;
    }
    const agp = optBool(s.style, body, "add_generation_prompt");
    if (!agp.ok) {
      return agp.res;
    }
    const text = s.tok.renderChat(msgs.messages, { addGenerationPrompt: agp.value ?? true });
    promptIds = s.tok.encode(text, { addSpecialTokens: false });
  } else {
    const p = parsePrompt(s, body);
    if (!p.ok) {
      return p.res;
    }
    promptIds = p.ids;
  }
  const forced = s.cfg.enableForceIncludeUsage;
  return {
    kind,
    model: model.value,
    promptIds,
    stream: stream.value === true,
    includeUsage: forced || opts.include_usage === true,
    continuousUsage: (forced || opts.include_usage === true) && opts.continuous_usage_stats === true,
    maxTokens: maxTokens.value,
    minTokens: minTokens.value ?? 0,
    ignoreEos: ignoreEos.value ?? false,
    seed: seed.value,
  };
}

interface Usage {
  prompt_tokens: number;
  total_tokens: number;
  completion_tokens: number;
  prompt_tokens_details?: { cached_tokens: number } | null;
}

function usage(prompt: number, completion: number): Usage {
  return { prompt_tokens: prompt, total_tokens: prompt + completion, completion_tokens: completion };
}

const SSE_HEADERS = { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" };

async function handle(c: Context, s: ReplicaState, kind: Kind): Promise<Response> {
  const read = await readJsonBody(c, s.style);
  if (!read.ok) {
    return read.res;
  }
  const parsed = parseRequest(s, kind, read.body);
  if (parsed instanceof Response) {
    return parsed;
  }
  const choice = resolveModel(s, parsed.model);
  if (choice instanceof Response) {
    return choice;
  }
  if (s.engine.dead) {
    return errorResponse(s.style, 500, new EngineDeadError().message, "InternalServerError");
  }
  const promptLen = parsed.promptIds.length;
  const maxLen = s.cfg.maxModelLen;
  if (promptLen >= maxLen) {
    return errorResponse(
      s.style,
      400,
      `This model's maximum context length is ${maxLen} tokens. However, your request has ${promptLen} input tokens. Please reduce the length of the input messages.`,
      "BadRequestError",
      "input_tokens",
    );
  }
  if (parsed.maxTokens !== undefined && promptLen + parsed.maxTokens > maxLen) {
    const mt = parsed.maxTokens;
    return errorResponse(
      s.style,
      400,
      `'max_tokens' or 'max_completion_tokens' is too large: ${mt}. This model's maximum context length is ${maxLen} tokens and your request has ${promptLen} input tokens (${mt} > ${maxLen} - ${promptLen}).`,
      "BadRequestError",
      "max_tokens",
    );
  }
  const lora = choice.kind === "lora" ? choice.lora : null;
  const modelName = lora ? lora.name : choice.kind === "base" ? choice.name : "";
  const suffix =
    c.req.header("x-request-id") ||
    (typeof read.body.request_id === "string" && read.body.request_id) ||
    randomId();
  const responseId = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${suffix}`;
  const engineId = `${responseId}#${randomId()}`;
  const created = Math.floor(Date.now() / 1000);
  const promptHash = fnv(fnvString(lora?.name ?? ""), parsed.promptIds);
  const nat = s.cfg.naturalOutputTokens;
  const params: SamplingParams = {
    // CompletionRequest defaults max_tokens to 16 (OpenAI's legacy default); chat to the rest of the context.
    maxTokens: parsed.maxTokens ?? (kind === "completion" ? 16 : maxLen - promptLen),
    minTokens: parsed.minTokens,
    ignoreEos: parsed.ignoreEos,
    eosTokenId: kind === "chat" ? s.tok.eotTokenId : s.tok.eosTokenId,
    naturalTokens: nat.min + (promptHash % (nat.max - nat.min + 1)),
    seed: parsed.seed === undefined ? promptHash : fnv(promptHash, [parsed.seed]),
  };
  const base = {
    id: responseId,
    object: kind === "chat" ? "chat.completion.chunk" : "text_completion",
    created,
    model: modelName,
  };
  const signal = c.req.raw.signal;
  const onDisconnect = (): void => {
    if (s.engine.abort(engineId)) {
      s.abortedRequestIds.push(responseId);
    }
  };
  const outputIds: number[] = [];
  let text = "";
  let cached = 0;
  const nextDelta = (ids: readonly number[]): string => {
    outputIds.push(...ids);
    const full = s.tok.decode(outputIds, { skipSpecialTokens: true });
    const delta = full.slice(text.length);
    text = full;
    return delta;
  };
  const promptDetails = (): { cached_tokens: number } | null =>
    s.cfg.enablePromptTokensDetails ? { cached_tokens: cached } : null;

  if (!parsed.stream) {
    s.inFlight++;
    try {
      const result = await new Promise<
        { finish: FinishReason } | { error: EngineDeadError } | { aborted: true }
      >((resolveResult) => {
        const listener: EngineListener = {
          onOutput(out) {
            cached = out.numCachedTokens;
            nextDelta(out.newTokenIds);
            if (out.finishReason) {
              resolveResult({ finish: out.finishReason });
            }
          },
          onError(error) {
            resolveResult({ error });
          },
        };
        s.engine.addRequest({ id: engineId, lora, promptTokenIds: parsed.promptIds, params, listener });
        signal.addEventListener("abort", () => {
          onDisconnect();
          resolveResult({ aborted: true });
        });
      });
      if ("error" in result) {
        return errorResponse(s.style, 500, result.error.message, "InternalServerError");
      }
      if ("aborted" in result) {
        return errorResponse(s.style, 400, "Client disconnected", "BadRequestError");
      }
      const u = { ...usage(promptLen, outputIds.length), prompt_tokens_details: promptDetails() };
      if (kind === "chat") {
        return json({
          id: responseId,
          object: "chat.completion",
          created,
          model: modelName,
          choices: [
            {
              index: 0,
              message: {
                role: "assistant",
                content: text,
                refusal: null,
                annotations: null,
                audio: null,
                function_call: null,
                tool_calls: [],
                reasoning: null,
                reasoning_content: null,
              },
              logprobs: null,
              finish_reason: result.finish,
              stop_reason: null,
              token_ids: null,
            },
          ],
          service_tier: null,
          system_fingerprint: s.fingerprint,
          usage: u,
          prompt_logprobs: null,
          prompt_token_ids: null,
          kv_transfer_params: null,
        });
      }
      return json({
        id: responseId,
        object: "text_completion",
        created,
        model: modelName,
        choices: [
          {
            index: 0,
            text,
            logprobs: null,
            finish_reason: result.finish,
            stop_reason: null,
            token_ids: null,
            prompt_logprobs: null,
            prompt_token_ids: null,
          },
        ],
        service_tier: null,
        system_fingerprint: s.fingerprint,
        usage: u,
        kv_transfer_params: null,
      });
    } finally {
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
  const end = (): void => {
    if (!closed && controller) {
      send("[DONE]");
      closed = true;
      s.inFlight--;
      controller.close();
    }
  };
  let first = true;
  const contUsage = (): { usage?: Usage } =>
    parsed.continuousUsage ? { usage: usage(promptLen, outputIds.length) } : {};
  const listener: EngineListener = {
    onOutput(out) {
      cached = out.numCachedTokens;
      if (first && kind === "chat") {
        send({
          ...base,
          choices: [
            { index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null },
          ],
          ...(parsed.continuousUsage ? { usage: usage(promptLen, 0) } : {}),
        });
      }
      first = false;
      const delta = nextDelta(out.newTokenIds);
      const fin = out.finishReason;
      const choiceTail = fin ? { finish_reason: fin, stop_reason: null } : { finish_reason: null };
      const choiceObj =
        kind === "chat"
          ? { index: 0, delta: { content: delta }, logprobs: null, ...choiceTail, token_ids: null }
          : {
              index: 0,
              text: delta,
              logprobs: null,
              ...(fin ? choiceTail : { finish_reason: null, stop_reason: null }),
            };
      send({
        ...base,
        choices: [choiceObj],
        ...(fin && !parsed.includeUsage ? { system_fingerprint: s.fingerprint } : {}),
        ...contUsage(),
      });
      if (fin) {
        if (parsed.includeUsage) {
          const details = promptDetails();
          send({
            ...base,
            choices: [],
            usage: {
              ...usage(promptLen, outputIds.length),
              ...(details ? { prompt_tokens_details: details } : {}),
            },
            system_fingerprint: s.fingerprint,
          });
        }
        end();
      }
    },
    onError(error) {
      send({ error: { message: error.message, type: "InternalServerError", param: null, code: 500 } });
      end();
    },
  };
  const body = new ReadableStream<Uint8Array>({
    start(ctrl) {
      controller = ctrl;
    },
    cancel() {
      if (!closed) {
        closed = true;
        s.inFlight--;
      }
      onDisconnect();
    },
  });
  s.inFlight++;
  s.engine.addRequest({ id: engineId, lora, promptTokenIds: parsed.promptIds, params, listener });
  signal.addEventListener("abort", onDisconnect);
  return new Response(body, { status: 200, headers: SSE_HEADERS });
}

export function registerInference(app: Hono, s: ReplicaState): void {
  app.post("/v1/chat/completions", (c) => handle(c, s, "chat"));
  app.post("/v1/completions", (c) => handle(c, s, "completion"));
}
