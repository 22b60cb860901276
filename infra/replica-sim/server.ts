import { createHash } from "node:crypto";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { getRequestListener } from "@hono/node-server";
import { Hono } from "hono";
import { checkAdapterDir, resolveLoraPath } from "./adapter-files.ts";
import { Engine, type EngineLora, type EngineSnapshot } from "./engine.ts";
import {
  detail,
  errorResponse,
  json,
  optBool,
  optString,
  readJsonBody,
  validationError,
} from "./http-util.ts";
import { registerInference } from "./inference.ts";
import { Exposition } from "./metrics.ts";
import { type ReplicaSimOptions, resolveSimConfig, type SimConfig } from "./options.ts";
import { type ReplicaState, randomId, resolveModel, withNameLock } from "./state.ts";
import { loadTokenizer } from "./tokenizer.ts";

export interface RunningReplicaSim {
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** Stops the engine (in-flight requests fail) and the HTTP server. */
  close(): Promise<void>;
}

export interface RegisteredAdapter {
  name: string;
  /** lora_path as sent. */
  path: string;
  intId: number;
}

export interface ReplicaSimSnapshot extends EngineSnapshot {
  /** `/v1/models`' LoRA part, in load order. */
  registered: RegisteredAdapter[];
  /** Response ids (`chatcmpl-…`, `cmpl-…`) of requests aborted by a client disconnect, in order. */
  abortedRequestIds: string[];
  /** HTTP inference requests still open. */
  inFlight: number;
}

export interface ReplicaSim {
  readonly config: SimConfig;
  /** Loads the tokenizer and static adapters, then listens on `host` (127.0.0.1; port 0 picks a free one). */
  start(port?: number, host?: string): Promise<RunningReplicaSim>;
  /** Test hook: engine queues, caches and recorded aborts. Empty before start(). */
  inspect(): ReplicaSimSnapshot;
  /** Test hook: `count` long-stale `vllm:lora_requests_info` series, as a long-running vLLM has. */
  addStaleLoraSeries(count: number): void;
}

const GUARDED_PREFIXES = ["/v1", "/v2", "/inference", "/cohere"];

function buildApp(s: ReplicaState): Hono {
  const app = new Hono();
  const { cfg, style } = s;

  app.use("*", async (c, next) => {
    if (cfg.apiKey !== undefined && c.req.method !== "OPTIONS") {
      const path = new URL(c.req.url).pathname;
      if (GUARDED_PREFIXES.some((p) => path.startsWith(p))) {
        const [scheme = "", ...rest] = (c.req.header("authorization") ?? "").split(" ");
        if (scheme.toLowerCase() !== "bearer" || rest.join(" ") !== cfg.apiKey) {
          return json({ error: "Unauthorized" }, 401);
        }
      }
    }
    await next();
    return undefined;
  });

  const health = (): Response =>
    new Response(null, { status: s.engine.dead ? 503 : 200, headers: { [BARE]: "1" } });
  app.get("/health", health);
  app.get("/ping", health);
  app.post("/ping", health);
  app.get("/version", () => json({ version: cfg.version }));
  app.get("/load", () => json({ server_load: cfg.enableServerLoadTracking ? s.inFlight : 0 }));
  app.get("/metrics", () => renderMetrics(s));

  app.get("/v1/models", () => {
    const now = Math.floor(Date.now() / 1000);
    const permission = () => [
      {
        id: `modelperm-${randomId()}`,
        object: "model_permission",
        created: now,
        allow_create_engine: false,
        allow_sampling: true,
        allow_logprobs: true,
        allow_search_indices: false,
        allow_view: true,
        allow_fine_tuning: false,
        organization: "*",
        group: null,
        is_blocking: false,
      },
    ];
    const first = cfg.servedModelNames[0] ?? cfg.model;
    const data = [
      ...cfg.servedModelNames.map((name) => ({
        id: name,
        object: "model",
        created: now,
        owned_by: "vllm",
        root: cfg.model,
        parent: null,
        max_model_len: cfg.maxModelLen,
        permission: permission(),
      })),
      ...[...s.registry.values()].map((l) => ({
        id: l.name,
        object: "model",
        created: now,
        owned_by: "vllm",
        root: l.path,
        parent: first,
        max_model_len: null,
        permission: permission(),
      })),
    ];
    return json({ object: "list", data });
  });

  registerInference(app, s);

  if (cfg.allowRuntimeLoraUpdating) {
    app.post("/v1/load_lora_adapter", async (c) => {
      const read = await readJsonBody(c, style);
      if (!read.ok) {
        return read.res;
      }
      const name = optString(style, read.body, "lora_name");
      if (!name.ok) {
        return name.res;
      }
      const path = optString(style, read.body, "lora_path");
      if (!path.ok) {
        return path.res;
      }
      // Before 2026-01 LoadLoRAAdapterRequest had no load_inplace: the field was ignored as unknown.
      const inplace = cfg.loadInplace
        ? optBool(style, read.body, "load_inplace")
        : { ok: true as const, value: undefined };
      if (!inplace.ok) {
        return inplace.res;
      }
      if (name.value === undefined || path.value === undefined) {
        const missing = name.value === undefined ? "lora_name" : "lora_path";
        return validationError(style, { type: "missing", loc: ["body", missing], msg: "Field required" });
      }
      return loadAdapter(s, name.value, path.value, inplace.value ?? false);
    });
    app.post("/v1/unload_lora_adapter", async (c) => {
      const read = await readJsonBody(c, style);
      if (!read.ok) {
        return read.res;
      }
      const name = optString(style, read.body, "lora_name");
      if (!name.ok) {
        return name.res;
      }
      return unloadAdapter(s, name.value ?? "");
    });
  }

  app.post("/tokenize", async (c) => {
    const read = await readJsonBody(c, style);
    if (!read.ok) {
      return read.res;
    }
    const b = read.body;
    const model = optString(style, b, "model");
    if (!model.ok) {
      return model.res;
    }
    const choice = resolveModel(s, model.value);
    if (choice instanceof Response) {
      return choice;
    }
    let tokens: number[];
    if (Array.isArray(b.messages)) {
      const msgs = b.messages.map((m: unknown) => {
        const o = (typeof m === "object" && m !== null ? m : {}) as { role?: unknown; content?: unknown };
        return { role: String(o.role ?? "user"), content: typeof o.content === "string" ? o.content : "" };
      });
      const text = s.tok.renderChat(msgs, { addGenerationPrompt: b.add_generation_prompt !== false });
      tokens = s.tok.encode(text, { addSpecialTokens: b.add_special_tokens === true });
    } else if (typeof b.prompt === "string") {
      tokens = s.tok.encode(b.prompt, { addSpecialTokens: b.add_special_tokens !== false });
    } else {
      return validationError(style, { type: "missing", loc: ["body", "prompt"], msg: "Field required" });
    }
    return json({
      count: tokens.length,
      max_model_len: cfg.maxModelLen,
      tokens,
      token_strs: b.return_token_strs === true ? s.tok.tokenStrings(tokens) : null,
    });
  });

  app.post("/detokenize", async (c) => {
    const read = await readJsonBody(c, style);
    if (!read.ok) {
      return read.res;
    }
    const model = optString(style, read.body, "model");
    if (!model.ok) {
      return model.res;
    }
    const choice = resolveModel(s, model.value);
    if (choice instanceof Response) {
      return choice;
    }
    const tokens = read.body.tokens;
    if (!Array.isArray(tokens) || !tokens.every((t) => Number.isInteger(t))) {
      return validationError(style, {
        type: "list_type",
        loc: ["body", "tokens"],
        msg: "Input should be a valid list",
      });
    }
    const ids = tokens as number[];
    if (ids.some((t) => t < 0 || t >= s.tok.vocabSize)) {
      return errorResponse(
        style,
        400,
        `Token id out of vocabulary (size ${s.tok.vocabSize}).`,
        "BadRequestError",
      );
    }
    return json({ prompt: s.tok.decode(ids) });
  });

  const known: Record<string, string[]> = {
    "/health": ["GET"],
    "/ping": ["GET", "POST"],
    "/version": ["GET"],
    "/load": ["GET"],
    "/metrics": ["GET"],
    "/v1/models": ["GET"],
    "/v1/chat/completions": ["POST"],
    "/v1/completions": ["POST"],
    "/tokenize": ["POST"],
    "/detokenize": ["POST"],
  };
  if (cfg.allowRuntimeLoraUpdating) {
    known["/v1/load_lora_adapter"] = ["POST"];
    known["/v1/unload_lora_adapter"] = ["POST"];
  }
  app.notFound((c) => {
    const path = new URL(c.req.url).pathname;
    return path in known ? detail(405, "Method Not Allowed") : detail(404, "Not Found");
  });
  app.onError((err) => {
    process.stderr.write(`replica-sim: ${err.stack ?? String(err)}\n`);
    return errorResponse(style, 500, String(err.message), "InternalServerError");
  });
  return app;
}

const BARE = "x-replica-sim-bare";

/** FastAPI's `Response(content=str)`: a 200 with no content-type at all. */
function plainText(text: string): Response {
  return new Response(text, { status: 200, headers: { [BARE]: "1" } });
}

// The Node adaptor adds `text/plain` to every response without a content-type; vLLM's plain-text
// and empty responses have none, so responses marked BARE lose it on the way out.
function stripContentTypeWhenBare(res: ServerResponse): void {
  const original = res.writeHead;
  res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
    for (const a of args) {
      if (typeof a === "object" && a !== null && !Array.isArray(a) && BARE in a) {
        const h = a as Record<string, unknown>;
        delete h[BARE];
        delete h["content-type"];
      }
    }
    return original.apply(this, args as Parameters<typeof original>);
  } as typeof original;
}

async function loadAdapter(s: ReplicaState, name: string, path: string, inplace: boolean): Promise<Response> {
  const { style } = s;
  if (!name || !path) {
    return errorResponse(
      style,
      400,
      "Both 'lora_name' and 'lora_path' must be provided.",
      "InvalidUserInput",
    );
  }
  return withNameLock(s, name, async () => {
    const existing = s.registry.get(name);
    if (existing && !inplace) {
      // v0.11 (serving_models.py `_check_load_lora_adapter_request`) has no load_inplace hint;
      // models/serving.py @ 00153c8b adds it with the field.
      const hint = s.cfg.loadInplace
        ? " If you want to load the adapter in place, set 'load_inplace' to True."
        : "";
      return errorResponse(
        style,
        400,
        `The lora adapter '${name}' has already been loaded.${hint}`,
        "InvalidUserInput",
      );
    }
    const intId = existing ? existing.intId : s.nextLoraId++;
    const dir = await resolveLoraPath(path, s.cfg.cwd);
    const lora: EngineLora = { name, intId, path, dir, loadInplace: inplace };
    const result = await s.engine.addLora(lora);
    if (!result.ok) {
      if (result.kind === "not_found") {
        return errorResponse(
          style,
          404,
          `Loading lora ${name} failed: No adapter found for ${path}`,
          "NotFoundError",
        );
      }
      if (result.kind === "dead") {
        return errorResponse(style, 500, result.message, "InternalServerError");
      }
      // v0.11 (vllm/entrypoints/openai/serving_models.py @ 0f1457b0 and later copies,
      // `load_lora_adapter`): any add_lora failure other than "No adapter found" is
      // `error_type = "BadRequestError"; status_code = HTTPStatus.BAD_REQUEST`. Since 2026-03
      // (vllm/entrypoints/openai/models/serving.py @ 00153c8b) it is
      // `err_type="InternalServerError", status_code=HTTPStatus.INTERNAL_SERVER_ERROR`.
      const message = `Call to add_lora method failed: ${result.message}`;
      return s.cfg.loadFailureStatus === 400
        ? errorResponse(style, 400, message, "BadRequestError")
        : errorResponse(style, 500, message, "InternalServerError");
    }
    s.registry.set(name, lora);
    return plainText(`Success: LoRA adapter '${name}' added successfully.`);
  });
}

async function unloadAdapter(s: ReplicaState, name: string): Promise<Response> {
  const { style } = s;
  if (!name) {
    return errorResponse(
      style,
      400,
      "'lora_name' needs to be provided to unload a LoRA adapter.",
      "InvalidUserInput",
    );
  }
  return withNameLock(s, name, async () => {
    const lora = s.registry.get(name);
    if (!lora) {
      return errorResponse(style, 404, `The lora adapter '${name}' cannot be found.`, "NotFoundError");
    }
    await s.engine.removeLora(lora.intId);
    s.registry.delete(name);
    return plainText(`Success: LoRA adapter '${name}' removed successfully.`);
  });
}

function renderMetrics(s: ReplicaState): Response {
  const { engine, cfg } = s;
  const base = { engine: "0", model_name: cfg.servedModelNames[0] ?? cfg.model };
  const e = new Exposition();
  e.family("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.");
  e.sample("vllm:num_requests_running", base, engine.numRunning());
  e.family("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.");
  e.sample("vllm:num_requests_waiting", base, engine.numWaiting());
  // Added by vLLM PR #38435 (2026-03/04, vllm/v1/metrics/loggers.py `gauge_waiting_by_reason`,
  // labels model_name, engine, reason ∈ capacity|deferred); v0.11 has only the two totals above
  // (loggers.py @ 005a810b).
  if (cfg.waitingByReasonMetric) {
    const reasons = engine.waitingByReason();
    e.family(
      "vllm:num_requests_waiting_by_reason",
      "gauge",
      "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.",
    );
    e.sample("vllm:num_requests_waiting_by_reason", { ...base, reason: "capacity" }, reasons.capacity);
    e.sample("vllm:num_requests_waiting_by_reason", { ...base, reason: "deferred" }, reasons.deferred);
  }
  e.family("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.");
  e.sample("vllm:kv_cache_usage_perc", base, engine.kvUsage());
  if (cfg.enableLora) {
    e.family("vllm:lora_requests_info", "gauge", "Running stats on lora requests.");
    for (const series of engine.loraInfoSeries.values()) {
      e.sample(
        "vllm:lora_requests_info",
        {
          max_lora: String(cfg.maxLoras),
          running_lora_adapters: series.running,
          waiting_lora_adapters: series.waiting,
        },
        series.value,
      );
    }
  }
  e.family("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig");
  e.sample(
    "vllm:cache_config_info",
    {
      block_size: String(engine.config.blockSize),
      enable_prefix_caching: cfg.enablePrefixCaching ? "True" : "False",
      engine: "0",
      num_gpu_blocks: String(engine.numGpuBlocks),
    },
    1,
  );
  const c = engine.counters;
  const counters: [string, string, number][] = [
    ["vllm:num_preemptions_total", "Cumulative number of preemption from the engine.", c.preemptions],
    ["vllm:prompt_tokens_total", "Number of prefill tokens processed.", c.promptTokens],
    [
      "vllm:prompt_tokens_cached_total",
      "Number of cached prompt tokens (local + external).",
      c.promptTokensCached,
    ],
    ["vllm:generation_tokens_total", "Number of generation tokens processed.", c.generationTokens],
    [
      "vllm:prefix_cache_queries_total",
      "Prefix cache queries, in terms of number of queried tokens.",
      c.prefixCacheQueries,
    ],
    [
      "vllm:prefix_cache_hits_total",
      "Prefix cache hits, in terms of number of cached tokens.",
      c.prefixCacheHits,
    ],
  ];
  for (const [name, help, value] of counters) {
    e.family(name, "counter", help);
    e.sample(name, base, value);
  }
  e.family("vllm:request_success_total", "counter", "Count of successfully processed requests.");
  for (const reason of ["stop", "length", "abort", "error", "repetition"] as const) {
    e.sample(
      "vllm:request_success_total",
      { engine: "0", finished_reason: reason, model_name: base.model_name },
      c.finished[reason],
    );
  }
  const h = engine.histograms;
  const hists = [
    ["vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", h.ttft],
    ["vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", h.itl],
    ["vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", h.e2e],
    ["vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", h.queue],
    ["vllm:request_prompt_tokens", "Number of prefill tokens processed.", h.promptTokens],
    ["vllm:request_generation_tokens", "Number of generation tokens processed.", h.generationTokens],
  ] as const;
  for (const [name, help, hist] of hists) {
    e.family(name, "histogram", help);
    e.histogram(name, base, hist);
  }
  return new Response(e.text(), {
    status: 200,
    headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
  });
}

/** A simulated vLLM replica following `vllm-replica-protocol.md`. */
export function createReplicaSim(options: ReplicaSimOptions = {}): ReplicaSim {
  const cfg = resolveSimConfig(options);
  let state: ReplicaState | null = null;
  let started = false;

  return {
    config: cfg,
    addStaleLoraSeries(count) {
      if (!state) {
        throw new Error("start the simulator first");
      }
      state.engine.addStaleLoraSeries(count);
    },
    inspect(): ReplicaSimSnapshot {
      if (!state) {
        return {
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
        };
      }
      return {
        ...state.engine.snapshot(),
        registered: [...state.registry.values()].map((l) => ({ name: l.name, path: l.path, intId: l.intId })),
        abortedRequestIds: [...state.abortedRequestIds],
        inFlight: state.inFlight,
      };
    },
    async start(port = 0, host = "127.0.0.1"): Promise<RunningReplicaSim> {
      if (started) {
        throw new Error("replica simulator already started");
      }
      started = true;
      const tok = await loadTokenizer();
      const engine = new Engine({
        maxLoras: cfg.maxLoras,
        maxCpuLoras: cfg.maxCpuLoras,
        loraEnabled: cfg.enableLora,
        maxNumSeqs: cfg.maxNumSeqs,
        maxNumBatchedTokens: cfg.maxNumBatchedTokens,
        maxModelLen: cfg.maxModelLen,
        kvCacheTokens: cfg.kvCacheTokens,
        blockSize: 16,
        enablePrefixCaching: cfg.enablePrefixCaching,
        unloadFreesEngine: cfg.unloadFreesEngine,
        maxLoraInfoSeries: cfg.maxLoraInfoSeries,
        loraInfoLabels: cfg.loraInfoLabels,
        latency: cfg.latency,
        fillerTokenIds: tok.fillerTokenIds,
        readAdapter: (dir) => checkAdapterDir(dir, cfg.adapterRules),
      });
      const fingerprint = `vllm-${cfg.version}-${createHash("sha256").update(JSON.stringify(cfg)).digest("hex").slice(0, 8)}`;
      const s: ReplicaState = {
        cfg,
        tok,
        engine,
        style: { legacy: cfg.legacyErrors },
        registry: new Map(),
        nextLoraId: 1,
        locks: new Map(),
        abortedRequestIds: [],
        inFlight: 0,
        fingerprint,
      };
      state = s;
      engine.start();
      for (const m of cfg.loraModules) {
        const res = await loadAdapter(s, m.name, m.path, false);
        if (res.status !== 200) {
          await engine.stop();
          throw new Error(`--lora-modules ${m.name}=${m.path}: ${await res.text()}`);
        }
      }
      if (cfg.startupDelayMs > 0) {
        await new Promise((r) => setTimeout(r, cfg.startupDelayMs));
      }
      const app = buildApp(s);
      const listener = getRequestListener(app.fetch);
      const server = createServer((req, res) => {
        stripContentTypeWhenBare(res);
        void listener(req, res);
      });
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
