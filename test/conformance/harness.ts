import { randomUUID } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ReplicaClient, vllm } from "../../engines/index.ts";
import {
  createReplicaSim,
  type ReplicaSim,
  type ReplicaSimOptions,
  VERSION_PROFILES,
  type VersionProfile,
} from "../../infra/replica-sim/index.ts";

/**
 * Where the conformance suite runs: the simulator (default) or a real vLLM named by
 * VLLM_CONFORMANCE_URL. A real replica must run with --enable-lora and
 * VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 and see VLLM_CONFORMANCE_ADAPTER_DIR at the same path.
 *
 *   VLLM_CONFORMANCE_URL              base URL of the replica under test
 *   VLLM_CONFORMANCE_API_KEY          its --api-key, if any (enables the 10.15 key checks)
 *   VLLM_CONFORMANCE_ADAPTER_DIR      folder both this process and the replica see (default: a temp dir)
 *   VLLM_CONFORMANCE_MAX_LORAS        its --max-loras (default: read from lora_requests_info, else 1)
 *   VLLM_CONFORMANCE_MAX_CPU_LORAS    its --max-cpu-loras (default: max loras)
 *   VLLM_CONFORMANCE_MAX_LORA_RANK    its --max-lora-rank (default 16)
 *   VLLM_CONFORMANCE_HIDDEN_SIZE      base hidden size for the fixture tensors (default 4096, Llama-3.1-8B)
 *   VLLM_CONFORMANCE_URL_NO_RUNTIME_LORA  a second replica started without the env flag (for 10.1)
 *   VLLM_CONFORMANCE_ALLOW_FATAL=1    let 10.12 kill the replica (deletes a registered adapter's files)
 *   VLLM_CONFORMANCE_PROFILE          which release's behaviour to expect from it: "current" (default,
 *                                     vLLM main) or "v0.11" (load failures 400, no load_inplace,
 *                                     separate running/waiting lora_requests_info sets, no
 *                                     num_requests_waiting_by_reason); see infra/replica-sim/README.md
 *
 * Against the simulator the suite runs once per version profile (PROFILES); against a real replica
 * once, with the profile VLLM_CONFORMANCE_PROFILE names.
 */
export const REAL_URL = process.env.VLLM_CONFORMANCE_URL || undefined;
export const isReal = REAL_URL !== undefined;

function realProfile(): VersionProfile {
  const v = process.env.VLLM_CONFORMANCE_PROFILE || "current";
  if (!(VERSION_PROFILES as readonly string[]).includes(v)) {
    throw new Error(`VLLM_CONFORMANCE_PROFILE must be one of ${VERSION_PROFILES.join(", ")}, got ${v}`);
  }
  return v as VersionProfile;
}

/** The profiles the suite runs under: every one against the simulator, the declared one against vLLM. */
export const PROFILES: readonly VersionProfile[] = isReal ? [realProfile()] : VERSION_PROFILES;

export interface Target {
  kind: "sim" | "real";
  /** The release behaviour expected: the simulator's profile, or VLLM_CONFORMANCE_PROFILE. */
  profile: VersionProfile;
  url: string;
  apiKey: string | undefined;
  client: ReplicaClient;
  /** First served model name: what base responses report as `model`. */
  baseName: string;
  servedNames: string[];
  maxLoras: number;
  maxCpuLoras: number;
  maxLoraRank: number;
  /** Inspection hook when the target is the simulator. */
  sim: ReplicaSim | null;
  close(): Promise<void>;
}

/** Small latencies so the whole suite stays fast; shapes still hold (a load still blocks a step, …). */
export const FAST_LATENCY = {
  prefillTokensPerSec: 200_000,
  decodeMsPerStep: 2,
  decodeMsPerExtraSeq: 0.05,
  loadBaseMs: 5,
  loadMsPerMb: 0,
  reloadBaseMs: 5,
  reloadMsPerMb: 0,
  activateMsPerMb: 0,
};

function envInt(name: string): number | undefined {
  const v = process.env[name];
  return v ? Number(v) : undefined;
}

/**
 * Starts a simulator with `options` (over the fast defaults; `profile` picks the release), or
 * attaches to the real replica (whose profile is VLLM_CONFORMANCE_PROFILE).
 */
export async function openTarget(options: ReplicaSimOptions = {}): Promise<Target> {
  if (REAL_URL) {
    const apiKey = process.env.VLLM_CONFORMANCE_API_KEY || undefined;
    const client = vllm.createReplicaClient({ baseUrl: REAL_URL, apiKey, timeoutMs: 60_000 });
    const caps = await client.capabilities();
    if (caps.kind !== "ok") {
      throw new Error(`cannot reach the replica under test at ${REAL_URL}: ${JSON.stringify(caps)}`);
    }
    const maxLoras = envInt("VLLM_CONFORMANCE_MAX_LORAS") ?? caps.value.maxLoras ?? 1;
    return {
      kind: "real",
      profile: realProfile(),
      url: REAL_URL.replace(/\/+$/, ""),
      apiKey,
      client,
      baseName: caps.value.servedModels[0] ?? "",
      servedNames: caps.value.servedModels,
      maxLoras,
      maxCpuLoras: envInt("VLLM_CONFORMANCE_MAX_CPU_LORAS") ?? maxLoras,
      maxLoraRank: envInt("VLLM_CONFORMANCE_MAX_LORA_RANK") ?? 16,
      sim: null,
      close: () => client.close(),
    };
  }
  const sim = createReplicaSim({
    servedModelNames: ["conformance-base", "conformance-alias"],
    maxLoras: 2,
    maxCpuLoras: 3,
    maxLoraRank: 16,
    ...options,
    latency: { ...FAST_LATENCY, ...options.latency },
  });
  const running = await sim.start(0);
  const client = vllm.createReplicaClient({
    baseUrl: running.url,
    apiKey: sim.config.apiKey,
    timeoutMs: 10_000,
  });
  return {
    kind: "sim",
    profile: sim.config.profile,
    url: running.url,
    apiKey: sim.config.apiKey,
    client,
    baseName: sim.config.servedModelNames[0] ?? "",
    servedNames: [...sim.config.servedModelNames],
    maxLoras: sim.config.maxLoras,
    maxCpuLoras: sim.config.maxCpuLoras,
    maxLoraRank: sim.config.maxLoraRank,
    sim,
    async close() {
      await client.close();
      await running.close();
    },
  };
}

let adapterRoot: string | undefined;

export async function adapterDir(): Promise<string> {
  if (!adapterRoot) {
    const shared = process.env.VLLM_CONFORMANCE_ADAPTER_DIR;
    if (shared) {
      adapterRoot = join(shared, `conformance-${randomUUID()}`);
      await mkdir(adapterRoot, { recursive: true });
    } else {
      adapterRoot = await mkdtemp(join(tmpdir(), "vllm-conformance-"));
    }
  }
  return adapterRoot;
}

export async function removeAdapterRoot(): Promise<void> {
  if (adapterRoot) {
    await rm(adapterRoot, { recursive: true, force: true });
    adapterRoot = undefined;
  }
}

export interface AdapterFixture {
  /** adapter_config.json fields layered over a valid LoRA config (r=8, alpha=16, q_proj). */
  config?: Record<string, unknown>;
  /** Raw adapter_config.json text (overrides `config`), e.g. broken JSON. */
  rawConfig?: string;
  /** Leave adapter_config.json out. */
  noConfig?: boolean;
  /** Weights file to write (default safetensors). */
  weights?: "safetensors" | "none";
  /** Decoder layers that get tensors (default 1); more layers make a bigger file. */
  layers?: number;
  /** Target modules that get tensors (default q_proj). */
  modules?: string[];
}

const HIDDEN = envInt("VLLM_CONFORMANCE_HIDDEN_SIZE") ?? 4096;
const KV = (HIDDEN / 32) * 8;
const MLP = Math.round(HIDDEN * 3.5);
const DIMS: Record<string, [number, number]> = {
  q_proj: [HIDDEN, HIDDEN],
  k_proj: [HIDDEN, KV],
  v_proj: [HIDDEN, KV],
  o_proj: [HIDDEN, HIDDEN],
  gate_proj: [HIDDEN, MLP],
  up_proj: [HIDDEN, MLP],
  down_proj: [MLP, HIDDEN],
};

/**
 * A minimal valid safetensors file: 8-byte little-endian header length, the JSON header, then
 * zeroed F16 data. lora_A is [r, in] and lora_B is [out, r] with the base model's dims.
 */
export function buildSafetensors(rank: number, layers: number, modules: readonly string[]): Buffer {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (let layer = 0; layer < layers; layer++) {
    for (const m of modules) {
      const [inF, outF] = DIMS[m] ?? [HIDDEN, HIDDEN];
      const group =
        m.endsWith("_proj") && ["gate_proj", "up_proj", "down_proj"].includes(m) ? "mlp" : "self_attn";
      const prefix = `base_model.model.model.layers.${layer}.${group}.${m}`;
      for (const [part, shape] of [
        ["lora_A", [rank, inF]],
        ["lora_B", [outF, rank]],
      ] as const) {
        const bytes = shape[0] * shape[1] * 2;
        header[`${prefix}.${part}.weight`] = { dtype: "F16", shape, data_offsets: [offset, offset + bytes] };
        offset += bytes;
      }
    }
  }
  header.__metadata__ = { format: "pt" };
  let json = Buffer.from(JSON.stringify(header), "utf8");
  const pad = (8 - (json.length % 8)) % 8;
  json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, Buffer.alloc(offset)]);
}

/** Writes a PEFT adapter directory and returns its absolute path. */
export async function writeAdapter(fixture: AdapterFixture = {}): Promise<string> {
  const dir = join(await adapterDir(), randomUUID());
  await mkdir(dir, { recursive: true });
  const config = {
    peft_type: "LORA",
    base_model_name_or_path: "meta-llama/Llama-3.1-8B-Instruct",
    r: 8,
    lora_alpha: 16,
    lora_dropout: 0.0,
    target_modules: fixture.modules ?? ["q_proj"],
    bias: "none",
    task_type: "CAUSAL_LM",
    ...fixture.config,
  };
  if (!fixture.noConfig) {
    await writeFile(join(dir, "adapter_config.json"), fixture.rawConfig ?? JSON.stringify(config, null, 2));
  }
  if ((fixture.weights ?? "safetensors") === "safetensors") {
    const rank = typeof config.r === "number" ? Math.min(config.r, 8) : 8;
    await writeFile(
      join(dir, "adapter_model.safetensors"),
      buildSafetensors(rank, fixture.layers ?? 1, fixture.modules ?? ["q_proj"]),
    );
  }
  return dir;
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

export function headers(
  t: Pick<Target, "apiKey">,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    "content-type": "application/json",
    ...(t.apiKey ? { authorization: `Bearer ${t.apiKey}` } : {}),
    ...extra,
  };
}

export async function postJson(
  t: Pick<Target, "url" | "apiKey">,
  path: string,
  body: unknown,
  extraHeaders: Record<string, string> = {},
): Promise<{ status: number; text: string; json: unknown; contentType: string | null }> {
  const res = await fetch(`${t.url}${path}`, {
    method: "POST",
    headers: headers(t, extraHeaders),
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json, contentType: res.headers.get("content-type") };
}

export interface SseEvent {
  /** Parsed JSON of a `data:` line, or the string "[DONE]". */
  data: Record<string, unknown> | "[DONE]";
  /** ms since the request was sent. */
  at: number;
}

export interface StreamResult {
  status: number;
  raw: string;
  events: SseEvent[];
}

/**
 * POSTs a streaming request and collects the SSE events with arrival times. `onEvent` can
 * return "stop" to disconnect early.
 */
export async function stream(
  t: Pick<Target, "url" | "apiKey">,
  path: string,
  body: Record<string, unknown>,
  opts: {
    headers?: Record<string, string>;
    onEvent?: (e: SseEvent, all: SseEvent[]) => "stop" | undefined;
  } = {},
): Promise<StreamResult> {
  const started = performance.now();
  const ac = new AbortController();
  const res = await fetch(`${t.url}${path}`, {
    method: "POST",
    headers: headers(t, opts.headers),
    body: JSON.stringify({ ...body, stream: true }),
    signal: ac.signal,
  });
  const events: SseEvent[] = [];
  let raw = "";
  if (!res.body) {
    return { status: res.status, raw, events };
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        break;
      }
      const chunk = decoder.decode(value, { stream: true });
      raw += chunk;
      buf += chunk;
      let idx = buf.indexOf("\n\n");
      while (idx >= 0) {
        const block = buf.slice(0, idx);
        buf = buf.slice(idx + 2);
        idx = buf.indexOf("\n\n");
        if (!block.startsWith("data: ")) {
          continue;
        }
        const payload = block.slice(6);
        const event: SseEvent = {
          data: payload === "[DONE]" ? "[DONE]" : (JSON.parse(payload) as Record<string, unknown>),
          at: performance.now() - started,
        };
        events.push(event);
        if (opts.onEvent?.(event, events) === "stop") {
          ac.abort();
          return { status: res.status, raw, events };
        }
      }
    }
  } catch (err) {
    if (!ac.signal.aborted) {
      throw err;
    }
  }
  return { status: res.status, raw, events };
}

/** A port nothing listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `cond` every few ms until it holds or `ms` pass (then throws). */
export async function waitFor(cond: () => boolean, ms = 3_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) {
      throw new Error("condition not met in time");
    }
    await sleep(5);
  }
}
