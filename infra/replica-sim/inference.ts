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
  /** One entry per prompt: a chat request has one, a completions request may batch several. */
  prompts: number[][];
  /** Choices per prompt (`n`). */
  n: number;
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

/** vLLM's VLLM_MAX_N_SEQUENCES default: the most sequences (n) one request may ask for. */
const MAX_N_SEQUENCES = 16_384;

const isTokenIds = (s: ReplicaState, p: unknown): p is number[] =>
  Array.isArray(p) && p.length > 0 && p.every((t) => Number.isInteger(t) && t >= 0 && t < s.tok.vocabSize);

/** A completions `prompt`: a string, token ids, or a list of either (a batch, each served on its own). */
function parsePrompt(
  s: ReplicaState,
  body: JsonBody,
): { ok: true; prompts: number[][] } | { ok: false; res: Response } {
  const p = body.prompt;
  if (p === undefined) {
    return {
      ok: false,
      res: validationError(s.style, { type: "missing", loc: ["body", "prompt"], msg: "Field required" }),
    };
  }
  const one = (x: unknown): number[] | null =>
    typeof x === "string" ? s.tok.encode(x, { addSpecialTokens: true }) : isTokenIds(s, x) ? x : null;
  const single = one(p);
  if (single) {
    return { ok: true, prompts: [single] };
  }
  if (Array.isArray(p) && p.length > 0) {
    const prompts = p.map(one);
    if (prompts.every((x): x is number[] => x !== null)) {
      return { ok: true, prompts };
    }
  }
  return {
    ok: false,
    res: errorResponse(
      s.style,
      400,
      "prompt must be a string, token ids, or a non-empty list of either.",
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
  if (n.value !== undefined && (n.value < 1 || n.value > MAX_N_SEQUENCES)) {
    return errorResponse(
      s.style,
      400,
      `n must be at least 1 and at most ${MAX_N_SEQUENCES}, got ${n.value}.`,
      "BadRequestError",
      "n",
    );
  }
  // Current vLLM no longer knows best_of: it is logged as an ignored field and generates n choices.
  const seed = optInt(s.style, body, "seed");
  if (!seed.ok) {
    return seed.res;
  }
  let prompts: number[][];
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
    prompts = [s.tok.encode(text, { addSpecialTokens: false })];
  } else {
    const p = parsePrompt(s, body);
    if (!p.ok) {
      return p.res;
    }
    prompts = p.prompts;
  }
  const forced = s.cfg.enableForceIncludeUsage;
  return {
    kind,
    model: model.value,
    prompts,
    n: n.value ?? 1,
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

/** One generated sequence: choice `index` of prompt `prompt` (vLLM: `index = prompt * n + j`). */
interface Sequence {
  index: number;
  prompt: number;
  engineId: string;
  params: SamplingParams;
  outputIds: number[];
  text: string;
  finish: FinishReason | null;
  started: boolean;
}

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
  const maxLen = s.cfg.maxModelLen;
  for (const promptIds of parsed.prompts) {
    const promptLen = promptIds.length;
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
  }
  const lora = choice.kind === "lora" ? choice.lora : null;
  const modelName = lora ? lora.name : choice.kind === "base" ? choice.name : "";
  const suffix =
    c.req.header("x-request-id") ||
    (typeof read.body.request_id === "string" && read.body.request_id) ||
    randomId();
  const responseId = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${suffix}`;
  const created = Math.floor(Date.now() / 1000);
  const nat = s.cfg.naturalOutputTokens;
  const promptLens = parsed.prompts.map((ids) => ids.length);
  const totalPrompt = promptLens.reduce((a, b) => a + b, 0);
  // Each choice is an engine request of its own (vLLM fans a request out into n children); choice 0
  // of a prompt keeps the seed a single-choice request would have.
  const sequences: Sequence[] = parsed.prompts.flatMap((promptIds, prompt) => {
    const promptHash = fnv(fnvString(lora?.name ?? ""), promptIds);
    const seed = parsed.seed === undefined ? promptHash : fnv(promptHash, [parsed.seed]);
    return Array.from({ length: parsed.n }, (_, j) => ({
      index: prompt * parsed.n + j,
      prompt,
      engineId: `${responseId}#${randomId()}`,
      params: {
        // CompletionRequest defaults max_tokens to 16 (OpenAI's legacy default); chat to the rest of the context.
        maxTokens: parsed.maxTokens ?? (kind === "completion" ? 16 : maxLen - promptIds.length),
        minTokens: parsed.minTokens,
        ignoreEos: parsed.ignoreEos,
        eosTokenId: kind === "chat" ? s.tok.eotTokenId : s.tok.eosTokenId,
        naturalTokens: nat.min + ((j === 0 ? promptHash : fnv(promptHash, [j])) % (nat.max - nat.min + 1)),
        seed: j === 0 ? seed : fnv(seed, [j]),
      },
      outputIds: [],
      text: "",
      finish: null,
      started: false,
    }));
  });
  const base = {
    id: responseId,
    object: kind === "chat" ? "chat.completion.chunk" : "text_completion",
    created,
    model: modelName,
  };
  const signal = c.req.raw.signal;
  let aborted = false;
  const onDisconnect = (): void => {
    if (aborted) {
      return;
    }
    aborted = true;
    let any = false;
    for (const seq of sequences) {
      any = s.engine.abort(seq.engineId) || any;
    }
    if (any) {
      s.abortedRequestIds.push(responseId);
    }
  };
  let cached = 0;
  // Incremental detokenization: only the last few tokens are decoded again, so a long generation
  // costs linear, not quadratic, time (the simulated output is ASCII words, so no character spans it).
  const nextDelta = (seq: Sequence, ids: readonly number[]): string => {
    const before = seq.outputIds.length;
    seq.outputIds.push(...ids);
    const from = Math.max(0, before - 4);
    const prefix = s.tok.decode(seq.outputIds.slice(from, before), { skipSpecialTokens: true });
    const window = s.tok.decode(seq.outputIds.slice(from), { skipSpecialTokens: true });
    const delta = window.slice(prefix.length);
    seq.text += delta;
    return delta;
  };
  const promptDetails = (): { cached_tokens: number } | null =>
    s.cfg.enablePromptTokensDetails ? { cached_tokens: cached } : null;
  const completionTotal = () => sequences.reduce((n, seq) => n + seq.outputIds.length, 0);
  const addAll = (listenerFor: (seq: Sequence) => EngineListener): void => {
    for (const seq of sequences) {
      s.engine.addRequest({
        id: seq.engineId,
        lora,
        promptTokenIds: parsed.prompts[seq.prompt] as number[],
        params: seq.params,
        listener: listenerFor(seq),
      });
    }
  };

  if (!parsed.stream) {
    s.inFlight++;
    try {
      const result = await new Promise<{ done: true } | { error: EngineDeadError } | { aborted: true }>(
        (resolveResult) => {
          let finished = 0;
          addAll((seq) => ({
            onOutput(out) {
              cached = out.numCachedTokens;
              nextDelta(seq, out.newTokenIds);
              if (out.finishReason) {
                seq.finish = out.finishReason;
                finished++;
                if (finished === sequences.length) {
                  resolveResult({ done: true });
                }
              }
            },
            onError(error) {
              resolveResult({ error });
            },
          }));
          signal.addEventListener("abort", () => {
            onDisconnect();
            resolveResult({ aborted: true });
          });
        },
      );
      if ("error" in result) {
        return errorResponse(s.style, 500, result.error.message, "InternalServerError");
      }
      if ("aborted" in result) {
        return errorResponse(s.style, 400, "Client disconnected", "BadRequestError");
      }
      const u = { ...usage(totalPrompt, completionTotal()), prompt_tokens_details: promptDetails() };
      if (kind === "chat") {
        return json({
          id: responseId,
          object: "chat.completion",
          created,
          model: modelName,
          choices: sequences.map((seq) => ({
            index: seq.index,
            message: {
              role: "assistant",
              content: seq.text,
              refusal: null,
              annotations: null,
              audio: null,
              function_call: null,
              tool_calls: [],
              reasoning: null,
              reasoning_content: null,
            },
            logprobs: null,
            finish_reason: seq.finish,
            stop_reason: null,
            token_ids: null,
          })),
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
        choices: sequences.map((seq) => ({
          index: seq.index,
          text: seq.text,
          logprobs: null,
          finish_reason: seq.finish,
          stop_reason: null,
          token_ids: null,
          prompt_logprobs: null,
          prompt_token_ids: null,
        })),
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
  let finished = 0;
  // With continuous usage stats, vLLM's chunk of choice i carries the prompt of its own prompt and
  // choice i's own completion tokens so far (serving_chat/serving_completion: previous_num_tokens[i]);
  // the final usage chunk sums every prompt once and every choice.
  const contUsage = (seq: Sequence, completion: number): { usage?: Usage } =>
    parsed.continuousUsage ? { usage: usage(promptLens[seq.prompt] ?? 0, completion) } : {};
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
  addAll((seq) => ({
    onOutput(out) {
      cached = out.numCachedTokens;
      if (!seq.started && kind === "chat") {
        send({
          ...base,
          choices: [
            {
              index: seq.index,
              delta: { role: "assistant", content: "" },
              logprobs: null,
              finish_reason: null,
            },
          ],
          ...contUsage(seq, 0),
        });
      }
      seq.started = true;
      const delta = nextDelta(seq, out.newTokenIds);
      const fin = out.finishReason;
      const choiceTail = fin ? { finish_reason: fin, stop_reason: null } : { finish_reason: null };
      const choiceObj =
        kind === "chat"
          ? { index: seq.index, delta: { content: delta }, logprobs: null, ...choiceTail, token_ids: null }
          : {
              index: seq.index,
              text: delta,
              logprobs: null,
              ...(fin ? choiceTail : { finish_reason: null, stop_reason: null }),
            };
      const last = fin !== null && finished + 1 === sequences.length;
      send({
        ...base,
        choices: [choiceObj],
        ...(last && !parsed.includeUsage ? { system_fingerprint: s.fingerprint } : {}),
        ...contUsage(seq, seq.outputIds.length),
      });
      if (fin) {
        seq.finish = fin;
        finished++;
        if (finished === sequences.length) {
          if (parsed.includeUsage) {
            const details = promptDetails();
            send({
              ...base,
              choices: [],
              usage: {
                ...usage(totalPrompt, completionTotal()),
                ...(details ? { prompt_tokens_details: details } : {}),
              },
              system_fingerprint: s.fingerprint,
            });
          }
          end();
        }
      }
    },
    onError(error) {
      send({ error: { message: error.message, type: "InternalServerError", param: null, code: 500 } });
      end();
    },
  }));
  signal.addEventListener("abort", onDisconnect);
  return new Response(body, { status: 200, headers: SSE_HEADERS });
}

export function registerInference(app: Hono, s: ReplicaState): void {
  app.post("/v1/chat/completions", (c) => handle(c, s, "chat"));
  app.post("/v1/completions", (c) => handle(c, s, "completion"));
}
