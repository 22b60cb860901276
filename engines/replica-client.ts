import { posix } from "node:path";
import { Agent, type Dispatcher, request } from "undici";
import type { PromSample } from "./prometheus.ts";

/**
 * What loraplane asks of an engine replica, whichever engine it is: the same calls and the same
 * discriminated results, so the agent, the scheduler and the fleet poller drive vLLM and SGLang
 * alike. Every call returns a result instead of throwing; only the caller's own AbortSignal throws
 * (its reason), as fetch does. Each engine's client lives in its folder (`vllm/`, `sglang/`).
 */

export interface LoraRequestsInfo {
  maxLora: number | null;
  /** Since 2025-11 identical to `waiting`: adapters with any queued or running request. */
  running: string[];
  waiting: string[];
  /** The series' value: unix seconds when this set was last current. */
  updatedAt: number;
}

/** A replica's `/metrics`, read the same way for every engine; what an engine lacks is null. */
export interface ReplicaMetrics {
  running: number | null;
  waiting: number | null;
  waitingByReason: { capacity: number; deferred: number } | null;
  /** 0–1, from `vllm:kv_cache_usage_perc` or the removed `vllm:gpu_cache_usage_perc`. */
  kvCacheUsage: number | null;
  /** vLLM's `lora_requests_info`; null where the engine has no per-LoRA gauge (SGLang). */
  lora: LoraRequestsInfo | null;
  promptTokensTotal: number | null;
  generationTokensTotal: number | null;
  preemptionsTotal: number | null;
  requestSuccessTotal: Record<string, number>;
  samples: PromSample[];
}

export interface ReplicaClientOptions {
  /** e.g. `http://10.0.3.7:8000`; a trailing slash is ignored. */
  baseUrl: string;
  /** The engine's `--api-key`, sent as a bearer token (vLLM checks it on /v1/* only). */
  apiKey?: string;
  /** SGLang's `--admin-api-key`: when the replica has one, only it may load and unload adapters. */
  adminApiKey?: string;
  /** Per-call limit in ms (default 10 s). */
  timeoutMs?: number;
  /** Limit for load_lora_adapter, which blocks while the engine reads and copies the weights (default 120 s). */
  loadTimeoutMs?: number;
  /** Connection pool to use; by default the client owns a keep-alive Agent, closed by close(). */
  dispatcher?: Dispatcher;
}

export interface CallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** Outcomes every call can have besides its own. */
export type TransportFailure =
  | { kind: "unauthorized"; status: 401 }
  | { kind: "unreachable"; error: string }
  | { kind: "timeout"; timeoutMs: number }
  /** Anything else: engine dead, LoRA not enabled, an unexpected status or body. */
  | { kind: "replica_error"; status: number; message: string };

/** Refused before anything was sent. */
export type InvalidInput = { kind: "invalid_input"; message: string };

export type LoadAdapterResult =
  | { kind: "ok" }
  /** vLLM refused the files (400 before 2026-03, 500 after): rank, DoRA, bias, modules, bad JSON, shapes. */
  | { kind: "adapter_rejected"; status: number; message: string }
  /** The directory or its adapter_config.json is missing on the replica. */
  | { kind: "not_found"; message: string }
  | { kind: "already_loaded"; message: string }
  | { kind: "runtime_updates_disabled" }
  | InvalidInput
  | TransportFailure;

export type UnloadAdapterResult =
  | { kind: "ok" }
  | { kind: "not_found"; message: string }
  | { kind: "runtime_updates_disabled" }
  | InvalidInput
  | TransportFailure;

export interface ModelCard {
  id: string;
  root: string | null;
  parent: string | null;
  maxModelLen: number | null;
}

export interface ModelList {
  /** Served base names, first one is what base responses report as `model`. */
  base: ModelCard[];
  /** Registered adapters in load order (registration, not residency). */
  adapters: ModelCard[];
}

export type Ok<T> = { kind: "ok"; value: T };

export type ListModelsResult = Ok<ModelList> | TransportFailure;

export type HealthResult = { kind: "ok" } | { kind: "unhealthy"; status: number } | TransportFailure;

export type MetricsResult = Ok<ReplicaMetrics> | TransportFailure;

export type TokenizeInput =
  | { prompt: string; model?: string; addSpecialTokens?: boolean }
  | { messages: { role: string; content: string }[]; model?: string; addGenerationPrompt?: boolean };

export type TokenizeResult =
  | Ok<{ count: number; tokens: number[]; maxModelLen: number }>
  /** The model named is neither a served base nor a registered adapter. */
  | { kind: "not_found"; message: string }
  | TransportFailure;

export interface Capabilities {
  /** VLLM_ALLOW_RUNTIME_LORA_UPDATING is on: the load/unload routes exist. */
  runtimeLoraUpdating: boolean;
  version: string | null;
  servedModels: string[];
  maxModelLen: number | null;
  /** From `vllm:lora_requests_info{max_lora}`; null until the replica has logged LoRA stats. */
  maxLoras: number | null;
}

export type CapabilitiesResult = Ok<Capabilities> | TransportFailure;

export interface ReplicaClient {
  readonly baseUrl: string;
  /**
   * The engine answers an unload only once no request uses the adapter (SGLang), so its files may go
   * after the grace period whatever its queues show; vLLM answers at once and its metrics must say.
   */
  readonly unloadDrains: boolean;
  loadAdapter(
    input: { loraName: string; absolutePath: string },
    opts?: CallOptions,
  ): Promise<LoadAdapterResult>;
  unloadAdapter(loraName: string, opts?: CallOptions): Promise<UnloadAdapterResult>;
  listModels(opts?: CallOptions): Promise<ListModelsResult>;
  health(opts?: CallOptions): Promise<HealthResult>;
  metrics(opts?: CallOptions): Promise<MetricsResult>;
  tokenize(input: TokenizeInput, opts?: CallOptions): Promise<TokenizeResult>;
  capabilities(opts?: CallOptions): Promise<CapabilitiesResult>;
  /** Closes the client's own connection pool (not a dispatcher passed in). */
  close(): Promise<void>;
}

const MAX_NAME_LENGTH = 256;

/**
 * LoRA names end up in the comma-joined labels of `vllm:lora_requests_info` and in URLs, so no
 * commas, slashes, whitespace or control characters. Returns the problem, or null when valid.
 */
export function validateLoraName(name: string): string | null {
  if (name.length === 0) {
    return "LoRA name is empty";
  }
  if (name.length > MAX_NAME_LENGTH) {
    return `LoRA name is longer than ${MAX_NAME_LENGTH} characters`;
  }
  if (/[,/\\]/.test(name)) {
    return `LoRA name ${JSON.stringify(name)} contains a comma, slash or backslash`;
  }
  if (/[\s\p{Cc}]/u.test(name)) {
    return `LoRA name ${JSON.stringify(name)} contains whitespace or a control character`;
  }
  return null;
}

/**
 * vLLM treats any path that is not absolute (and does not exist relative to its working directory)
 * as a Hugging Face Hub repo id and tries to download it: only absolute POSIX paths are sent.
 */
export function validateAdapterPath(path: string): string | null {
  if (!posix.isAbsolute(path)) {
    return `adapter path ${JSON.stringify(path)} is not absolute`;
  }
  if (/[\p{Cc}]/u.test(path)) {
    return "adapter path contains a control character";
  }
  return null;
}

export interface ParsedError {
  message: string;
  type: string | null;
  /** FastAPI's own `{"detail": …}` (unknown route, method not allowed). */
  detail: string | null;
}

/** Reads vLLM's error JSON: `{"error":{…}}`, the legacy flat `{"object":"error",…}`, or `{"detail":…}`. */
export function parseErrorBody(text: string): ParsedError | null {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof body !== "object" || body === null) {
    return null;
  }
  const o = body as Record<string, unknown>;
  if (typeof o.detail === "string") {
    return { message: o.detail, type: null, detail: o.detail };
  }
  if (typeof o.error === "object" && o.error !== null) {
    const e = o.error as Record<string, unknown>;
    return {
      message: String(e.message ?? ""),
      type: typeof e.type === "string" ? e.type : null,
      detail: null,
    };
  }
  if (typeof o.error === "string") {
    return { message: o.error, type: null, detail: null };
  }
  if (typeof o.message === "string") {
    return { message: o.message, type: typeof o.type === "string" ? o.type : null, detail: null };
  }
  return null;
}

export interface RawResponse {
  status: number;
  text: string;
}

function errorText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : "";
    return typeof code === "string" ? `${code} ${err.message}${cause}` : `${err.message}${cause}`;
  }
  return String(err);
}

export function asModelCards(data: unknown): ModelCard[] | null {
  if (!Array.isArray(data)) {
    return null;
  }
  const cards: ModelCard[] = [];
  for (const d of data) {
    if (typeof d !== "object" || d === null || typeof (d as { id?: unknown }).id !== "string") {
      return null;
    }
    const c = d as { id: string; root?: unknown; parent?: unknown; max_model_len?: unknown };
    cards.push({
      id: c.id,
      root: typeof c.root === "string" ? c.root : null,
      parent: typeof c.parent === "string" ? c.parent : null,
      maxModelLen: typeof c.max_model_len === "number" ? c.max_model_len : null,
    });
  }
  return cards;
}

/**
 * The most of one answer read into memory. `/metrics` may be far larger than any other answer: vLLM
 * adds a `vllm:lora_requests_info` series for every adapter set it ever saw and never removes one
 * (about 150 bytes each: 16 MiB is some 100,000 sets); past it the replica's metrics are unreadable
 * until it restarts, which the reader reports, instead of holding an unbounded body.
 */
export const MAX_METRICS_BYTES = 16 * 1024 * 1024;
export const MAX_ANSWER_BYTES = 4 * 1024 * 1024;

/** The HTTP side every engine client shares: bounded reads, timeouts, the bearer key, one pool. */
export interface Transport {
  call(
    method: "GET" | "POST",
    path: string,
    body: unknown,
    opts: CallOptions | undefined,
    fallbackTimeout: number,
    maxBytes?: number,
    bearer?: string,
  ): Promise<RawResponse | TransportFailure>;
  close(): Promise<void>;
}

export function isTransportFailure(r: RawResponse | TransportFailure): r is TransportFailure {
  return "kind" in r;
}

/** A status no call expects: 401 is the key, anything else the replica's own trouble. */
export function unexpectedAnswer(r: RawResponse): TransportFailure {
  if (r.status === 401) {
    return { kind: "unauthorized", status: 401 };
  }
  const parsed = parseErrorBody(r.text);
  return { kind: "replica_error", status: r.status, message: parsed?.message ?? r.text.slice(0, 500) };
}

export function parseJsonAnswer(r: RawResponse): unknown {
  try {
    return JSON.parse(r.text);
  } catch {
    return undefined;
  }
}

export function createTransport(options: ReplicaClientOptions): Transport {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  // uvicorn closes idle connections after 5 s: give ours up first so a reused socket is never half-closed.
  const ownAgent = options.dispatcher
    ? null
    : new Agent({ keepAliveTimeout: 4_000, keepAliveMaxTimeout: 4_000 });
  const dispatcher: Dispatcher = options.dispatcher ?? (ownAgent as Agent);

  async function call(
    method: "GET" | "POST",
    path: string,
    body: unknown,
    opts: CallOptions | undefined,
    fallbackTimeout: number,
    maxBytes = MAX_ANSWER_BYTES,
    bearer = options.apiKey,
  ): Promise<RawResponse | TransportFailure> {
    const timeoutMs = opts?.timeoutMs ?? fallbackTimeout;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = opts?.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    const headers: Record<string, string> = {};
    if (bearer) {
      headers.authorization = `Bearer ${bearer}`;
    }
    if (body !== undefined) {
      headers["content-type"] = "application/json";
    }
    try {
      const res = await request(`${baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        dispatcher,
        signal,
      });
      const chunks: Buffer[] = [];
      let bytes = 0;
      for await (const chunk of res.body) {
        bytes += (chunk as Buffer).length;
        if (bytes > maxBytes) {
          res.body.destroy();
          return {
            kind: "replica_error",
            status: res.statusCode,
            message: `the replica's answer to ${method} ${path} is larger than ${maxBytes} bytes`,
          };
        }
        chunks.push(chunk as Buffer);
      }
      return { status: res.statusCode, text: Buffer.concat(chunks, bytes).toString("utf8") };
    } catch (err) {
      if (opts?.signal?.aborted) {
        throw opts.signal.reason;
      }
      if (timeout.aborted) {
        return { kind: "timeout", timeoutMs };
      }
      return { kind: "unreachable", error: errorText(err) };
    }
  }

  return {
    call,
    async close() {
      await ownAgent?.close();
    },
  };
}

/** `GET /v1/models` as both engines answer it: base cards have no parent, adapter cards name theirs. */
export async function listModelsOver(
  transport: Transport,
  opts: CallOptions | undefined,
  timeoutMs: number,
): Promise<ListModelsResult> {
  const r = await transport.call("GET", "/v1/models", undefined, opts, timeoutMs);
  if (isTransportFailure(r)) {
    return r;
  }
  if (r.status !== 200) {
    return unexpectedAnswer(r);
  }
  const cards = asModelCards((parseJsonAnswer(r) as { data?: unknown } | undefined)?.data);
  if (!cards) {
    return { kind: "replica_error", status: r.status, message: "malformed /v1/models body" };
  }
  return {
    kind: "ok",
    value: {
      base: cards.filter((c) => c.parent === null),
      adapters: cards.filter((c) => c.parent !== null),
    },
  };
}

/** `GET /health`: 200 is healthy, any other answer is not. */
export async function healthOver(
  transport: Transport,
  opts: CallOptions | undefined,
  timeoutMs: number,
): Promise<HealthResult> {
  const r = await transport.call("GET", "/health", undefined, opts, timeoutMs);
  if (isTransportFailure(r)) {
    return r;
  }
  return r.status === 200 ? { kind: "ok" } : { kind: "unhealthy", status: r.status };
}

/** `GET /metrics`, read up to MAX_METRICS_BYTES and summarized by the engine's own reader. */
export async function metricsOver(
  transport: Transport,
  opts: CallOptions | undefined,
  timeoutMs: number,
  summarize: (text: string) => ReplicaMetrics,
): Promise<MetricsResult> {
  const r = await transport.call("GET", "/metrics", undefined, opts, timeoutMs, MAX_METRICS_BYTES);
  if (isTransportFailure(r)) {
    return r;
  }
  return r.status === 200 ? { kind: "ok", value: summarize(r.text) } : unexpectedAnswer(r);
}
