import { timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { getRequestListener } from "@hono/node-server";
import { type Context, Hono } from "hono";
import { Engine } from "./engine.ts";
import { detail, json } from "./http-util.ts";
import { Exposition } from "./metrics.ts";
import type { ReplicaSimOptions } from "./options.ts";
import type { ReplicaSim, ReplicaSimSnapshot, RunningReplicaSim } from "./server.ts";
import { engineReadSglang } from "./sglang-adapter.ts";
import { resolveSglangConfig, type SglangSimConfig } from "./sglang-config.ts";
import {
  readSglangJson,
  registerSglangInference,
  sglangError,
  sglangValidationError,
} from "./sglang-inference.ts";
import { loadAdapter, type SglangState, unloadAdapter } from "./sglang-state.ts";
import { loadTokenizer } from "./tokenizer.ts";

/**
 * A simulated SGLang server (`--engine sglang`): the routes of sgl-project/sglang
 * python/sglang/srt/entrypoints/http_server.py @ 0270cffc14bfddbaa85d1c844d584feb47951abf that
 * loraplane uses, over the same engine core as the vLLM mode. README "SGLang mode" lists the sources
 * and what differs from a real SGLang.
 */

export interface SglangReplicaSimSnapshot extends ReplicaSimSnapshot {
  /** The scheduler's adapters (`loaded_adapters`), in load order. */
  backend: string[];
  /** Every name ever loaded (`lora_ref_cache`): requests naming one of them reload it. */
  everLoaded: string[];
  /** Names whose unload waits for their in-flight requests. */
  draining: string[];
}

export interface SglangReplicaSim extends ReplicaSim {
  readonly config: SglangSimConfig;
  inspect(): SglangReplicaSimSnapshot;
}

/** Routes that need no key even when keys are set (utils/auth.py @ 0ce3659c `decide_request_auth`). */
const OPEN_PREFIXES = ["/health", "/ready", "/metrics"];
/** `@auth_level(AuthLevel.ADMIN_OPTIONAL)` routes among those simulated (http_server.py @ 0270cffc). */
const ADMIN_OPTIONAL = new Set(["/load_lora_adapter", "/unload_lora_adapter"]);

function sameKey(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** `_check_token`: `Authorization: Bearer <key>` or the Anthropic-style `x-api-key: <key>`. */
function tokenMatches(authz: string | undefined, xApiKey: string | undefined, expected: string): boolean {
  if (authz) {
    const i = authz.indexOf(" ");
    if (i > 0 && authz.slice(0, i).toLowerCase() === "bearer" && sameKey(authz.slice(i + 1), expected)) {
      return true;
    }
  }
  return xApiKey !== undefined && sameKey(xApiKey, expected);
}

/**
 * `decide_request_auth` (utils/auth.py @ 0ce3659c): OPTIONS and /health*, /ready*, /metrics* are
 * always open; admin-optional routes take only the admin key when one is set, else the API key, else
 * nothing; every other route takes the API key when one is set (the admin key does not open them).
 * A refusal is 401 `{"error": "Unauthorized"}`.
 */
function authorised(
  cfg: SglangSimConfig,
  method: string,
  path: string,
  authz?: string,
  xKey?: string,
): boolean {
  if (method === "OPTIONS" || OPEN_PREFIXES.some((p) => path.startsWith(p))) {
    return true;
  }
  if (ADMIN_OPTIONAL.has(path)) {
    if (cfg.adminApiKey) {
      return tokenMatches(authz, xKey, cfg.adminApiKey);
    }
    return cfg.apiKey ? tokenMatches(authz, xKey, cfg.apiKey) : true;
  }
  return cfg.apiKey ? tokenMatches(authz, xKey, cfg.apiKey) : true;
}

function buildApp(s: SglangState): Hono {
  const app = new Hono();
  const { cfg } = s;
  const served = cfg.servedModelNames[0] ?? cfg.model;

  app.use("*", async (c, next) => {
    const path = new URL(c.req.url).pathname;
    if (!authorised(cfg, c.req.method, path, c.req.header("authorization"), c.req.header("x-api-key"))) {
      return json({ error: "Unauthorized" }, 401);
    }
    await next();
    return undefined;
  });

  // http_server.py @ 0270cffc `health_generate` serves both: 200 (503 when unhealthy); /health does
  // not generate unless SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION is set, /health_generate does.
  const health = () => new Response(null, { status: s.engine.dead ? 503 : 200 });
  app.get("/health", health);
  app.get("/health_generate", health);
  app.get("/ready", health);
  app.get("/ping", () => new Response(null, { status: 200 }));
  app.get("/", () => json("SGLang is running"));

  const modelInfo = () =>
    json({
      model_path: cfg.model,
      served_model_name: served,
      tokenizer_path: cfg.model,
      is_generation: true,
      preferred_sampling_params: null,
      weight_version: "default",
    });
  app.get("/model_info", modelInfo);
  app.get("/get_model_info", modelInfo);
  // `/server_info` (`/get_server_info` is the deprecated alias): the resolved server args, the
  // scheduler info, `version` and `"frontend": "python"`. Only the args loraplane reads are simulated.
  const serverInfo = () =>
    json({
      model_path: cfg.model,
      served_model_name: served,
      enable_lora: cfg.enableLora,
      max_loras_per_batch: cfg.maxLorasPerBatch,
      max_loaded_loras: cfg.maxLoadedLoras,
      max_lora_rank: cfg.maxLoraRank,
      lora_target_modules: ["all"],
      lora_eviction_policy: "lru",
      context_length: cfg.maxModelLen,
      max_running_requests: cfg.maxNumSeqs,
      chunked_prefill_size: cfg.maxNumBatchedTokens,
      disable_radix_cache: !cfg.enablePrefixCaching,
      enable_metrics: true,
      api_key: cfg.apiKey === undefined ? null : "<redacted>",
      max_total_num_tokens: cfg.kvCacheTokens,
      internal_states: [{}],
      version: cfg.version,
      frontend: "python",
    });
  app.get("/server_info", serverInfo);
  app.get("/get_server_info", serverInfo);
  app.get("/metrics", () => renderMetrics(s));

  // `available_models`: the served name (root = itself, max_model_len = context length), then every
  // registered adapter in the registry's LRU order with root = lora_path, parent = served name.
  app.get("/v1/models", () => {
    const created = Math.floor(Date.now() / 1000);
    const card = (id: string, root: string, parent: string | null, maxLen: number | null) => ({
      id,
      object: "model",
      created,
      owned_by: "sglang",
      root,
      parent,
      max_model_len: maxLen,
    });
    const data = [card(served, served, null, cfg.maxModelLen)];
    if (cfg.enableLora) {
      for (const a of s.registry.values()) {
        data.push(card(a.name, a.path, served, null));
      }
    }
    return json({ object: "list", data });
  });
  app.get("/v1/models/*", (c) => {
    const model = decodeURIComponent(new URL(c.req.url).pathname.slice("/v1/models/".length));
    if (model !== served) {
      return json(
        {
          error: {
            message: `The model '${model}' does not exist`,
            type: "invalid_request_error",
            param: "model",
            code: "model_not_found",
          },
        },
        404,
      );
    }
    return json({
      id: model,
      object: "model",
      created: Math.floor(Date.now() / 1000),
      owned_by: "sglang",
      root: model,
      parent: null,
      max_model_len: cfg.maxModelLen,
    });
  });

  // `load_lora_adapter` / `unload_lora_adapter`: the body is LoRAUpdateOutput
  // `{success, error_message, loaded_adapters}` with 200 on success and 400 otherwise.
  const update = (out: { success: boolean }) => json(out, out.success ? 200 : 400);
  app.post("/load_lora_adapter", async (c) => {
    const read = await readBody(c.req.raw);
    if (!read.ok) {
      return read.res;
    }
    const { lora_name: name, lora_path: path, pinned } = read.body;
    for (const [field, v] of [
      ["lora_name", name],
      ["lora_path", path],
    ] as const) {
      if (v === undefined) {
        return sglangValidationError(
          `[{'type': 'missing', 'loc': ('body', '${field}'), 'msg': 'Field required'}]`,
        );
      }
      if (typeof v !== "string") {
        return sglangValidationError(
          `[{'type': 'string_type', 'loc': ('body', '${field}'), 'msg': 'Input should be a valid string'}]`,
        );
      }
    }
    if (pinned !== undefined && typeof pinned !== "boolean") {
      return sglangValidationError(
        "[{'type': 'bool_type', 'loc': ('body', 'pinned'), 'msg': 'Input should be a valid boolean'}]",
      );
    }
    return update(await loadAdapter(s, name as string, path as string, pinned === true));
  });
  app.post("/unload_lora_adapter", async (c) => {
    const read = await readBody(c.req.raw);
    if (!read.ok) {
      return read.res;
    }
    const name = read.body.lora_name;
    if (name === undefined) {
      return sglangValidationError(
        "[{'type': 'missing', 'loc': ('body', 'lora_name'), 'msg': 'Field required'}]",
      );
    }
    if (typeof name !== "string") {
      return sglangValidationError(
        "[{'type': 'string_type', 'loc': ('body', 'lora_name'), 'msg': 'Input should be a valid string'}]",
      );
    }
    return update(await unloadAdapter(s, name));
  });

  registerSglangInference(app, s);

  // `/v1/tokenize` (and the hidden `/tokenize`): TokenizeRequest's fields were not read in the index;
  // the simulator takes `prompt` (a string) and answers `{tokens, count, max_model_len}`.
  const tokenize = async (c: Context) => {
    const read = await readSglangJson(c);
    if (!read.ok) {
      return read.res;
    }
    const p = read.body.prompt;
    if (typeof p !== "string") {
      return sglangValidationError(
        "[{'type': 'missing', 'loc': ('body', 'prompt'), 'msg': 'Field required'}]",
      );
    }
    const tokens = s.tok.encode(p, { addSpecialTokens: read.body.add_special_tokens !== false });
    return json({ tokens, count: tokens.length, max_model_len: cfg.maxModelLen });
  };
  app.post("/v1/tokenize", tokenize);
  app.post("/tokenize", tokenize);

  app.notFound(() => detail(404, "Not Found"));
  app.onError((err) => {
    process.stderr.write(`replica-sim (sglang): ${err.stack ?? String(err)}\n`);
    return sglangError(`Internal server error: ${err.message}`, "InternalServerError", 500);
  });
  return app;
}

/** FastAPI's body parsing for the admin routes (they have no content-type check of their own). */
async function readBody(
  req: Request,
): Promise<{ ok: true; body: Record<string, unknown> } | { ok: false; res: Response }> {
  const text = await req.text();
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
        "[{'type': 'dataclass_type', 'loc': ('body',), 'msg': 'Input should be a dictionary or an instance of the dataclass'}]",
      ),
    };
  }
  return { ok: true, body: parsed as Record<string, unknown> };
}

/**
 * `/metrics` with `--enable-metrics` (always on here). Gauge names from
 * python/sglang/srt/metrics/collector.py @ 00ae9c15 (`sglang:num_running_reqs`,
 * `sglang:num_queue_reqs`, `sglang:num_used_tokens`, `sglang:token_usage`, `sglang:cache_hit_rate`,
 * `sglang:max_total_num_tokens`) and the LoRA pool gauges `sglang:lora_pool_slots_used` /
 * `_total` (index excerpt 54493583113). There is no per-adapter series. The label set
 * (model_name, engine_type, tp_rank, pp_rank) and the counter/histogram names follow SGLang's
 * collectors as remembered, not a pinned file.
 */
function renderMetrics(s: SglangState): Response {
  const { engine, cfg } = s;
  const labels = {
    model_name: cfg.servedModelNames[0] ?? cfg.model,
    engine_type: "unified",
    tp_rank: "0",
    pp_rank: "0",
  };
  const e = new Exposition();
  const c = engine.counters;
  const used = Math.round(engine.kvUsage() * cfg.kvCacheTokens);
  const gauges: [string, string, number][] = [
    ["sglang:num_running_reqs", "The number of running requests.", engine.numRunning()],
    ["sglang:num_used_tokens", "The number of used tokens.", used],
    ["sglang:token_usage", "The token usage.", engine.kvUsage()],
    ["sglang:gen_throughput", "The generation throughput (token/s).", 0],
    ["sglang:num_queue_reqs", "The number of requests in the waiting queue.", engine.numWaiting()],
    [
      "sglang:cache_hit_rate",
      "The prefix cache hit rate.",
      c.prefixCacheQueries > 0 ? c.prefixCacheHits / c.prefixCacheQueries : 0,
    ],
    [
      "sglang:max_total_num_tokens",
      "Maximum total number of tokens in the KV cache pool.",
      cfg.kvCacheTokens,
    ],
  ];
  if (cfg.enableLora) {
    gauges.push(
      [
        "sglang:lora_pool_slots_used",
        "Number of LoRA adapter slots currently occupied in the GPU memory pool.",
        engine.snapshot().gpuSlots.length,
      ],
      [
        "sglang:lora_pool_slots_total",
        "Total number of LoRA adapter slots in the GPU memory pool.",
        cfg.maxLorasPerBatch,
      ],
    );
  }
  for (const [name, help, value] of gauges) {
    e.family(name, "gauge", help);
    e.sample(name, labels, value);
  }
  const counters: [string, string, number][] = [
    ["sglang:prompt_tokens_total", "Number of prefill tokens processed.", c.promptTokens],
    ["sglang:generation_tokens_total", "Number of generation tokens processed.", c.generationTokens],
    ["sglang:cached_tokens_total", "Number of cached prompt tokens.", c.promptTokensCached],
    [
      "sglang:num_requests_total",
      "Number of requests processed.",
      c.finished.stop + c.finished.length + c.finished.abort + c.finished.error,
    ],
  ];
  for (const [name, help, value] of counters) {
    e.family(name, "counter", help);
    e.sample(name, labels, value);
  }
  const h = engine.histograms;
  e.family("sglang:time_to_first_token_seconds", "histogram", "Histogram of time to first token in seconds.");
  e.histogram("sglang:time_to_first_token_seconds", labels, h.ttft);
  e.family(
    "sglang:e2e_request_latency_seconds",
    "histogram",
    "Histogram of End-to-end request latency in seconds",
  );
  e.histogram("sglang:e2e_request_latency_seconds", labels, h.e2e);
  e.family("sglang:inter_token_latency_seconds", "histogram", "Histogram of inter-token latency in seconds.");
  e.histogram("sglang:inter_token_latency_seconds", labels, h.itl);
  return new Response(e.text(), {
    status: 200,
    headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
  });
}

/** A simulated SGLang server; `createReplicaSim({engine: "sglang", …})` returns one. */
export function createSglangReplicaSim(options: ReplicaSimOptions = {}): SglangReplicaSim {
  const cfg = resolveSglangConfig(options);
  let state: SglangState | null = null;
  let started = false;
  const empty: SglangReplicaSimSnapshot = {
    dead: false,
    running: [],
    waiting: [],
    cpuCache: [],
    gpuSlots: [],
    kvCacheUsage: 0,
    loadsQueued: 0,
    registered: [],
    abortedRequestIds: [],
    inFlight: 0,
    backend: [],
    everLoaded: [],
    draining: [],
  };
  return {
    config: cfg,
    addStaleLoraSeries() {
      throw new Error("SGLang has no per-adapter metric series (no vllm:lora_requests_info)");
    },
    inspect(): SglangReplicaSimSnapshot {
      if (!state) {
        return { ...empty };
      }
      const st = state;
      return {
        ...st.engine.snapshot(),
        registered: [...st.registry.values()].map((a) => ({
          name: a.name,
          path: a.path,
          intId: a.lora.intId,
        })),
        abortedRequestIds: [...st.abortedRequestIds],
        inFlight: st.inFlight,
        backend: [...st.backend.values()].map((a) => a.name),
        everLoaded: [...st.refCache.keys()],
        draining: [...st.draining],
      };
    },
    async start(port = 0, host = "127.0.0.1"): Promise<RunningReplicaSim> {
      if (started) {
        throw new Error("replica simulator already started");
      }
      started = true;
      const tok = await loadTokenizer();
      const engine = new Engine({
        // The GPU pool has --max-loras-per-batch slots, so a batch mixes at most that many adapters;
        // requests for another adapter wait (the scheduler's validate_lora_batch).
        maxLoras: cfg.maxLorasPerBatch,
        // Every registered adapter stays in host memory (LoRAManager.loras); --max-loaded-loras is
        // enforced on the registry by unloading, never by the engine cache.
        maxCpuLoras: Number.POSITIVE_INFINITY,
        loraEnabled: cfg.enableLora,
        maxNumSeqs: cfg.maxNumSeqs,
        maxNumBatchedTokens: cfg.maxNumBatchedTokens,
        maxModelLen: cfg.maxModelLen,
        kvCacheTokens: cfg.kvCacheTokens,
        blockSize: 16,
        enablePrefixCaching: cfg.enablePrefixCaching,
        unloadFreesEngine: true,
        maxLoraInfoSeries: 0,
        latency: cfg.latency,
        fillerTokenIds: tok.fillerTokenIds,
        readAdapter: engineReadSglang,
      });
      const s: SglangState = {
        cfg,
        tok,
        engine,
        registry: new Map(),
        backend: new Map(),
        refCache: new Map(),
        counters: new Map(),
        draining: new Set(),
        nextLoraId: 1,
        lock: Promise.resolve(),
        abortedRequestIds: [],
        inFlight: 0,
      };
      state = s;
      engine.start();
      // --lora-paths: loaded at startup; a failure aborts it.
      for (const m of cfg.loraModules) {
        const res = await loadAdapter(s, m.name, m.path, false);
        if (!res.success) {
          await engine.stop();
          throw new Error(`Failed to load LoRA adapter ${m.name}: ${res.error_message}`);
        }
      }
      if (cfg.startupDelayMs > 0) {
        await new Promise((r) => setTimeout(r, cfg.startupDelayMs));
      }
      const listener = getRequestListener(buildApp(s).fetch);
      const server = createServer((req, res) => void listener(req, res));
      await new Promise<void>((resolveListen, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          resolveListen();
        });
      });
      const actual = (server.address() as AddressInfo).port;
      return {
        url: `http://${host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host}:${actual}`,
        port: actual,
        async close() {
          await engine.stop();
          await new Promise<void>((r) => {
            server.close(() => r());
            server.closeIdleConnections();
            setTimeout(() => server.closeAllConnections(), 50).unref();
          });
        },
      };
    },
  };
}
