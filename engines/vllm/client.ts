import { posix } from "node:path";
import { Agent, type Dispatcher, request } from "undici";
import { parsePrometheusText, type ReplicaMetrics, summarizeMetrics } from "./metrics.ts";

/**
 * The vLLM replica wire protocol as loraplane uses it (see vllm-replica-protocol.md). Every call
 * returns a discriminated result instead of throwing; only the caller's own AbortSignal throws
 * (its reason), as fetch does.
 */

export interface ReplicaClientOptions {
  /** e.g. `http://10.0.3.7:8000`; a trailing slash is ignored. */
  baseUrl: string;
  /** vLLM's `--api-key`, sent as a bearer token (only /v1/* checks it). */
  apiKey?: string;
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

interface RawResponse {
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

function asModelCards(data: unknown): ModelCard[] | null {
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
const MAX_ANSWER_BYTES = 4 * 1024 * 1024;

const ENGINE_DEAD = "EngineCore encountered an issue";
const LORA_DISABLED = "LoRA is not enabled";

export function createReplicaClient(options: ReplicaClientOptions): ReplicaClient {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const defaultTimeout = options.timeoutMs ?? 10_000;
  const loadTimeout = options.loadTimeoutMs ?? 120_000;
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
  ): Promise<RawResponse | TransportFailure> {
    const timeoutMs = opts?.timeoutMs ?? fallbackTimeout;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = opts?.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    const headers: Record<string, string> = {};
    if (options.apiKey) {
      headers.authorization = `Bearer ${options.apiKey}`;
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

  function isFailure(r: RawResponse | TransportFailure): r is TransportFailure {
    return "kind" in r;
  }

  function unexpected(r: RawResponse): TransportFailure {
    if (r.status === 401) {
      return { kind: "unauthorized", status: 401 };
    }
    const parsed = parseErrorBody(r.text);
    return { kind: "replica_error", status: r.status, message: parsed?.message ?? r.text.slice(0, 500) };
  }

  function parseJson(r: RawResponse): unknown {
    try {
      return JSON.parse(r.text);
    } catch {
      return undefined;
    }
  }

  const client: ReplicaClient = {
    baseUrl,

    async loadAdapter(input, opts) {
      const nameProblem = validateLoraName(input.loraName);
      if (nameProblem) {
        return { kind: "invalid_input", message: nameProblem };
      }
      const pathProblem = validateAdapterPath(input.absolutePath);
      if (pathProblem) {
        return { kind: "invalid_input", message: pathProblem };
      }
      // Never load_inplace: it reloads from disk on every generation and reuses stale prefix KV.
      const r = await call(
        "POST",
        "/v1/load_lora_adapter",
        { lora_name: input.loraName, lora_path: input.absolutePath },
        opts,
        loadTimeout,
      );
      if (isFailure(r)) {
        return r;
      }
      if (r.status === 200) {
        return { kind: "ok" };
      }
      const err = parseErrorBody(r.text);
      if (r.status === 404 && err?.detail === "Not Found") {
        return { kind: "runtime_updates_disabled" };
      }
      if (r.status === 404 && err) {
        return { kind: "not_found", message: err.message };
      }
      if (r.status === 400 && err?.message.includes("has already been loaded")) {
        return { kind: "already_loaded", message: err.message };
      }
      if (
        (r.status === 400 || r.status === 500) &&
        err &&
        err.detail === null &&
        !err.message.includes(ENGINE_DEAD) &&
        !err.message.includes(LORA_DISABLED)
      ) {
        return { kind: "adapter_rejected", status: r.status, message: err.message };
      }
      return unexpected(r);
    },

    async unloadAdapter(loraName, opts) {
      const nameProblem = validateLoraName(loraName);
      if (nameProblem) {
        return { kind: "invalid_input", message: nameProblem };
      }
      const r = await call("POST", "/v1/unload_lora_adapter", { lora_name: loraName }, opts, defaultTimeout);
      if (isFailure(r)) {
        return r;
      }
      if (r.status === 200) {
        return { kind: "ok" };
      }
      const err = parseErrorBody(r.text);
      if (r.status === 404 && err?.detail === "Not Found") {
        return { kind: "runtime_updates_disabled" };
      }
      if (r.status === 404 && err) {
        return { kind: "not_found", message: err.message };
      }
      return unexpected(r);
    },

    async listModels(opts) {
      const r = await call("GET", "/v1/models", undefined, opts, defaultTimeout);
      if (isFailure(r)) {
        return r;
      }
      if (r.status !== 200) {
        return unexpected(r);
      }
      const body = parseJson(r) as { data?: unknown } | undefined;
      const cards = asModelCards(body?.data);
      if (!cards) {
        return { kind: "replica_error", status: r.status, message: "malformed /v1/models body" };
      }
      // Base cards have no parent; LoRA cards name the base they belong to.
      return {
        kind: "ok",
        value: {
          base: cards.filter((c) => c.parent === null),
          adapters: cards.filter((c) => c.parent !== null),
        },
      };
    },

    async health(opts) {
      const r = await call("GET", "/health", undefined, opts, defaultTimeout);
      if (isFailure(r)) {
        return r;
      }
      return r.status === 200 ? { kind: "ok" } : { kind: "unhealthy", status: r.status };
    },

    async metrics(opts) {
      const r = await call("GET", "/metrics", undefined, opts, defaultTimeout, MAX_METRICS_BYTES);
      if (isFailure(r)) {
        return r;
      }
      if (r.status !== 200) {
        return unexpected(r);
      }
      return { kind: "ok", value: summarizeMetrics(parsePrometheusText(r.text)) };
    },

    async tokenize(input, opts) {
      const body =
        "prompt" in input
          ? { model: input.model, prompt: input.prompt, add_special_tokens: input.addSpecialTokens ?? true }
          : {
              model: input.model,
              messages: input.messages,
              add_generation_prompt: input.addGenerationPrompt ?? true,
            };
      const r = await call("POST", "/tokenize", body, opts, defaultTimeout);
      if (isFailure(r)) {
        return r;
      }
      if (r.status === 404) {
        const err = parseErrorBody(r.text);
        if (err && err.detail === null) {
          return { kind: "not_found", message: err.message };
        }
      }
      if (r.status !== 200) {
        return unexpected(r);
      }
      const b = parseJson(r) as { count?: unknown; tokens?: unknown; max_model_len?: unknown } | undefined;
      if (typeof b?.count !== "number" || !Array.isArray(b.tokens) || typeof b.max_model_len !== "number") {
        return { kind: "replica_error", status: r.status, message: "malformed /tokenize body" };
      }
      return {
        kind: "ok",
        value: { count: b.count, tokens: b.tokens as number[], maxModelLen: b.max_model_len },
      };
    },

    async capabilities(opts) {
      // An empty name is refused (400) by an enabled replica before anything happens; a replica
      // without VLLM_ALLOW_RUNTIME_LORA_UPDATING has no such route (404 {"detail":"Not Found"}).
      const probe = await call("POST", "/v1/unload_lora_adapter", { lora_name: "" }, opts, defaultTimeout);
      if (isFailure(probe)) {
        return probe;
      }
      let runtimeLoraUpdating: boolean;
      if (probe.status === 400) {
        runtimeLoraUpdating = true;
      } else if (probe.status === 404 && parseErrorBody(probe.text)?.detail === "Not Found") {
        runtimeLoraUpdating = false;
      } else {
        return unexpected(probe);
      }
      const [version, models, metrics] = await Promise.all([
        call("GET", "/version", undefined, opts, defaultTimeout),
        client.listModels(opts),
        client.metrics(opts),
      ]);
      if (isFailure(version)) {
        return version;
      }
      if (models.kind !== "ok") {
        return models;
      }
      const v =
        version.status === 200 ? (parseJson(version) as { version?: unknown } | undefined) : undefined;
      const first = models.value.base[0];
      return {
        kind: "ok",
        value: {
          runtimeLoraUpdating,
          version: typeof v?.version === "string" ? v.version : null,
          servedModels: models.value.base.map((c) => c.id),
          maxModelLen: first?.maxModelLen ?? null,
          maxLoras: metrics.kind === "ok" ? (metrics.value.lora?.maxLora ?? null) : null,
        },
      };
    },

    async close() {
      await ownAgent?.close();
    },
  };
  return client;
}
