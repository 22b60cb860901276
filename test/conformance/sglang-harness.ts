import {
  createReplicaSim,
  type ReplicaSimOptions,
  type SglangReplicaSim,
} from "../../infra/replica-sim/index.ts";
import { FAST_LATENCY, type SseEvent, type StreamResult, stream as sseStream } from "./harness.ts";

/**
 * Where the SGLang conformance suite runs: the simulator in SGLang mode (default) or a real SGLang
 * server named by SGLANG_CONFORMANCE_URL. A real server must run with --enable-lora,
 * --max-lora-rank and --lora-target-modules set (nothing is loaded at startup), --enable-metrics,
 * and see SGLANG_CONFORMANCE_ADAPTER_DIR at the same path as this process.
 *
 *   SGLANG_CONFORMANCE_URL                base URL of the server under test
 *   SGLANG_CONFORMANCE_API_KEY            its --api-key, if any (enables the key checks)
 *   SGLANG_CONFORMANCE_ADMIN_API_KEY      its --admin-api-key, if any (load/unload then take only it)
 *   SGLANG_CONFORMANCE_ADAPTER_DIR        folder both this process and the server see (default: a temp dir);
 *                                         the fixtures reuse the vLLM harness' writer, which reads it as
 *                                         VLLM_CONFORMANCE_ADAPTER_DIR: the suite copies it across
 *   SGLANG_CONFORMANCE_MAX_LOADED_LORAS   its --max-loaded-loras (the eviction test is skipped without it)
 *   SGLANG_CONFORMANCE_MAX_LORAS_PER_BATCH its --max-loras-per-batch (default 8)
 *   SGLANG_CONFORMANCE_MAX_LORA_RANK      its --max-lora-rank (default 16)
 *   VLLM_CONFORMANCE_HIDDEN_SIZE          base hidden size for the fixture tensors (default 4096,
 *                                         Llama-3.1-8B), shared with the vLLM harness
 *
 * Requests use plain fetch, never the service's engine clients, so the suite checks SGLang (or
 * the simulator) against SGLang's source and nothing else.
 */
export const SGLANG_URL = process.env.SGLANG_CONFORMANCE_URL || undefined;
export const isRealSglang = SGLANG_URL !== undefined;

if (process.env.SGLANG_CONFORMANCE_ADAPTER_DIR && !process.env.VLLM_CONFORMANCE_ADAPTER_DIR) {
  process.env.VLLM_CONFORMANCE_ADAPTER_DIR = process.env.SGLANG_CONFORMANCE_ADAPTER_DIR;
}

export interface SglangTarget {
  kind: "sim" | "real";
  url: string;
  apiKey: string | undefined;
  adminApiKey: string | undefined;
  /** `--served-model-name`: what `/v1/models` lists first and adapters name as `parent`. */
  baseName: string;
  maxLorasPerBatch: number;
  /** null: unbounded (the eviction checks need a bound). */
  maxLoadedLoras: number | null;
  maxLoraRank: number;
  sim: SglangReplicaSim | null;
  close(): Promise<void>;
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  return v ? Number(v) : undefined;
}

/** Starts a simulator in SGLang mode with `options` (over fast latencies), or attaches to the real server. */
export async function openSglangTarget(options: ReplicaSimOptions = {}): Promise<SglangTarget> {
  if (SGLANG_URL) {
    const url = SGLANG_URL.replace(/\/+$/, "");
    const apiKey = process.env.SGLANG_CONFORMANCE_API_KEY || undefined;
    const res = await fetch(`${url}/v1/models`, {
      headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {},
    });
    if (res.status !== 200) {
      throw new Error(`cannot list models of the server under test at ${url}: ${res.status}`);
    }
    const models = (await res.json()) as { data: { id: string; parent?: string | null }[] };
    return {
      kind: "real",
      url,
      apiKey,
      adminApiKey: process.env.SGLANG_CONFORMANCE_ADMIN_API_KEY || undefined,
      baseName: models.data.find((m) => !m.parent)?.id ?? "",
      maxLorasPerBatch: envInt("SGLANG_CONFORMANCE_MAX_LORAS_PER_BATCH") ?? 8,
      maxLoadedLoras: envInt("SGLANG_CONFORMANCE_MAX_LOADED_LORAS") ?? null,
      maxLoraRank: envInt("SGLANG_CONFORMANCE_MAX_LORA_RANK") ?? 16,
      sim: null,
      close: async () => {},
    };
  }
  const sim = createReplicaSim({
    servedModelNames: ["conformance-base"],
    maxLoras: 2,
    maxCpuLoras: 3,
    maxLoraRank: 16,
    ...options,
    engine: "sglang",
    latency: { ...FAST_LATENCY, ...options.latency },
  });
  const running = await sim.start(0);
  return {
    kind: "sim",
    url: running.url,
    apiKey: sim.config.apiKey,
    adminApiKey: sim.config.adminApiKey,
    baseName: sim.config.servedModelNames[0] ?? "",
    maxLorasPerBatch: sim.config.maxLorasPerBatch,
    maxLoadedLoras: sim.config.maxLoadedLoras,
    maxLoraRank: sim.config.maxLoraRank,
    sim,
    close: () => running.close(),
  };
}

export interface JsonAnswer {
  status: number;
  text: string;
  json: unknown;
  at: number;
}

/** A POST with JSON and, unless `key` is null, the key the route needs (admin routes: the admin key). */
export async function post(
  t: SglangTarget,
  path: string,
  body: unknown,
  key: string | null | undefined = path.endsWith("_lora_adapter") ? (t.adminApiKey ?? t.apiKey) : t.apiKey,
): Promise<JsonAnswer> {
  const res = await fetch(`${t.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, text, json: parsed, at: performance.now() };
}

export async function get(t: SglangTarget, path: string, key: string | null | undefined = t.apiKey) {
  const res = await fetch(`${t.url}${path}`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, text, json: parsed, contentType: res.headers.get("content-type") };
}

/** A streaming POST (SSE), with the target's key. */
export function sglangStream(
  t: SglangTarget,
  path: string,
  body: Record<string, unknown>,
  onEvent?: (e: SseEvent, all: SseEvent[]) => "stop" | undefined,
): Promise<StreamResult> {
  return sseStream({ url: t.url, apiKey: t.apiKey }, path, body, onEvent ? { onEvent } : {});
}

/** An OpenAI-route error body: flat ErrorResponse (serving_base.py @ c5695a4b), or nested in newer builds. */
export function errorOf(body: unknown): { message: string; type: string; code: number } | null {
  if (typeof body !== "object" || body === null) {
    return null;
  }
  const b = body as Record<string, unknown>;
  const inner = (typeof b.error === "object" && b.error !== null ? b.error : b) as Record<string, unknown>;
  if (typeof inner.message !== "string") {
    return null;
  }
  return { message: inner.message, type: String(inner.type), code: Number(inner.code) };
}
