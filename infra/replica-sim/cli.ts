import { parseArgs } from "node:util";
import { createReplicaSim } from "./create.ts";
import type { LatencyModel } from "./engine.ts";
import {
  type ReplicaSimOptions,
  type StaticLoraModule,
  VERSION_PROFILES,
  type VersionProfile,
} from "./options.ts";

const USAGE = `Usage: npm run replica-sim -- --port <p> --served-model-name <name> [options]

A simulated vLLM replica (OpenAI-compatible server, V1 engine) on 127.0.0.1.
Env: VLLM_ALLOW_RUNTIME_LORA_UPDATING=1|true enables /v1/load_lora_adapter and /v1/unload_lora_adapter.
     VLLM_API_KEY is used when --api-key is not given.

Engine:
  --host <addr>                   default 127.0.0.1 (0.0.0.0 in a container)
  --port <n>                      default 8000
  --model <id>                    base model id (root of the base cards)
  --served-model-name <name>      repeat for several names; default: the model
  --max-loras <n>                 GPU LoRA slots (default 1)
  --max-cpu-loras <n>             engine CPU LRU size (default: max-loras)
  --max-lora-rank <r>             one of 1,8,16,32,64,128,256,320,512 (default 16)
  --max-num-seqs <n>              default 256
  --max-num-batched-tokens <n>    token budget per step (default 2048)
  --max-model-len <n>             default 8192
  --kv-cache-tokens <n>           KV cache size in tokens (default 100000)
  --api-key <key>                 guard /v1/* with a bearer key
  --lora-modules <name=path>      static adapter loaded at startup (repeatable)
  --[no-]enable-lora              default on
  --[no-]enable-prefix-caching    default on
  --enable-prompt-tokens-details  --enable-force-include-usage  --enable-server-load-tracking
  --unload-frees-engine           Rust-frontend unload (drops weights from the caches)
  --profile v0.11|current         vLLM release to answer like (default current): v0.11 rejects loads
                                  with 400, has no load_inplace, separate running/waiting adapter
                                  sets in lora_requests_info, no num_requests_waiting_by_reason
  --legacy-errors                 pre-2025-08 flat error JSON, load failures as 400
  --max-lora-info-series <n>      bound the lora_requests_info series kept (default: all, as vLLM)

SGLang mode (--engine sglang; README "SGLang mode"): SGLang's routes, bodies and messages
  --engine vllm|sglang            protocol to speak (default vllm)
  --max-loras-per-batch <n>       adapters one batch can mix, GPU pool slots (default 8)
  --max-loaded-loras <n>          adapters registered at once; a load past it unloads the least
                                  recently used unpinned one (default: unbounded)
  --admin-api-key <key>           the only key load/unload accept when set
  --lora-paths <name=path|path>   adapter loaded at startup (repeatable)
  --api-key, --served-model-name, --max-lora-rank (any positive integer), --port as above

Latency model (defaults: roughly an L4 running Llama-3.1-8B-AWQ):
  --prefill-tokens-per-s <n>      3000
  --decode-ms-per-token <ms>      22     one step with one running sequence
  --decode-ms-per-extra-seq <ms>  0.35   added per running sequence beyond the first
  --load-base-ms <ms>             60     load_lora_adapter fixed cost
  --load-ms-per-mb <ms>           3
  --reload-base-ms <ms>           40     in-step reload of an evicted adapter
  --reload-ms-per-mb <ms>         3
  --activate-ms-per-mb <ms>       0.1    CPU cache to GPU slot copy
  --natural-output-tokens <a:b>   24:200 tokens the model emits when max_tokens allows
  --startup-ms <ms>               0      delay before the port opens
`;

function num(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) {
    return undefined;
  }
  const n = Number(v);
  if (!Number.isFinite(n)) {
    throw new Error(`--${flag} expects a number, got ${JSON.stringify(v)}`);
  }
  return n;
}

function parseLoraModule(spec: string): StaticLoraModule {
  if (spec.trim().startsWith("{")) {
    const o = JSON.parse(spec) as { name?: unknown; path?: unknown; base_model_name?: unknown };
    if (typeof o.name !== "string" || typeof o.path !== "string") {
      throw new Error(`--lora-modules: ${spec} needs "name" and "path"`);
    }
    return {
      name: o.name,
      path: o.path,
      ...(typeof o.base_model_name === "string" ? { baseModelName: o.base_model_name } : {}),
    };
  }
  const eq = spec.indexOf("=");
  if (eq <= 0) {
    throw new Error(`--lora-modules expects name=path, got ${spec}`);
  }
  return { name: spec.slice(0, eq), path: spec.slice(eq + 1) };
}

export function parseCli(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): ReplicaSimOptions & { port: number; host: string } {
  const { values: v } = parseArgs({
    args: [...argv],
    allowNegative: true,
    strict: true,
    options: {
      help: { type: "boolean", short: "h" },
      port: { type: "string" },
      host: { type: "string" },
      model: { type: "string" },
      "served-model-name": { type: "string", multiple: true },
      "max-loras": { type: "string" },
      "max-cpu-loras": { type: "string" },
      engine: { type: "string" },
      "max-loras-per-batch": { type: "string" },
      "max-loaded-loras": { type: "string" },
      "admin-api-key": { type: "string" },
      "lora-paths": { type: "string", multiple: true },
      "max-lora-rank": { type: "string" },
      "max-num-seqs": { type: "string" },
      "max-num-batched-tokens": { type: "string" },
      "max-model-len": { type: "string" },
      "kv-cache-tokens": { type: "string" },
      "api-key": { type: "string" },
      "lora-modules": { type: "string", multiple: true },
      "enable-lora": { type: "boolean" },
      "enable-prefix-caching": { type: "boolean" },
      "enable-prompt-tokens-details": { type: "boolean" },
      "enable-force-include-usage": { type: "boolean" },
      "enable-server-load-tracking": { type: "boolean" },
      "unload-frees-engine": { type: "boolean" },
      "legacy-errors": { type: "boolean" },
      profile: { type: "string" },
      "max-lora-info-series": { type: "string" },
      "prefill-tokens-per-s": { type: "string" },
      "decode-ms-per-token": { type: "string" },
      "decode-ms-per-extra-seq": { type: "string" },
      "load-base-ms": { type: "string" },
      "load-ms-per-mb": { type: "string" },
      "reload-base-ms": { type: "string" },
      "reload-ms-per-mb": { type: "string" },
      "activate-ms-per-mb": { type: "string" },
      "natural-output-tokens": { type: "string" },
      "startup-ms": { type: "string" },
    },
  });
  if (v.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const latency: Partial<LatencyModel> = {};
  const lat: [keyof LatencyModel, string][] = [
    ["prefillTokensPerSec", "prefill-tokens-per-s"],
    ["decodeMsPerStep", "decode-ms-per-token"],
    ["decodeMsPerExtraSeq", "decode-ms-per-extra-seq"],
    ["loadBaseMs", "load-base-ms"],
    ["loadMsPerMb", "load-ms-per-mb"],
    ["reloadBaseMs", "reload-base-ms"],
    ["reloadMsPerMb", "reload-ms-per-mb"],
    ["activateMsPerMb", "activate-ms-per-mb"],
  ];
  for (const [key, flag] of lat) {
    const n = num(flag, v[flag as keyof typeof v] as string | undefined);
    if (n !== undefined) {
      latency[key] = n;
    }
  }
  let natural: { min: number; max: number } | undefined;
  if (v["natural-output-tokens"] !== undefined) {
    const [a, b] = v["natural-output-tokens"].split(":").map(Number);
    if (a === undefined || b === undefined || !Number.isInteger(a) || !Number.isInteger(b)) {
      throw new Error("--natural-output-tokens expects min:max");
    }
    natural = { min: a, max: b };
  }
  const allow = (env.VLLM_ALLOW_RUNTIME_LORA_UPDATING ?? "0").trim().toLowerCase();
  const opts: ReplicaSimOptions & { port: number; host: string } = {
    port: num("port", v.port) ?? 8000,
    host: v.host ?? "127.0.0.1",
    allowRuntimeLoraUpdating: allow === "1" || allow === "true",
    latency,
  };
  const target: ReplicaSimOptions = opts;
  const set = <K extends keyof ReplicaSimOptions>(key: K, value: ReplicaSimOptions[K] | undefined): void => {
    if (value !== undefined) {
      target[key] = value;
    }
  };
  set("model", v.model);
  set("servedModelNames", v["served-model-name"]);
  set("maxLoras", num("max-loras", v["max-loras"]));
  set("maxCpuLoras", num("max-cpu-loras", v["max-cpu-loras"]));
  if (v.engine !== undefined && v.engine !== "vllm" && v.engine !== "sglang") {
    throw new Error(`--engine expects vllm or sglang, got ${JSON.stringify(v.engine)}`);
  }
  if (v.engine === "sglang") {
    // SGLang's own spellings: maxLoras is --max-loras-per-batch, maxCpuLoras --max-loaded-loras.
    opts.engine = "sglang";
    set("maxLoras", num("max-loras-per-batch", v["max-loras-per-batch"]));
    set("maxCpuLoras", num("max-loaded-loras", v["max-loaded-loras"]));
    set("adminApiKey", v["admin-api-key"]);
    // `--lora-paths <PATH> | <NAME>=<PATH>`: a bare path is its own name (docs/advanced_features/lora.ipynb).
    set(
      "loraModules",
      v["lora-paths"]?.map((spec) =>
        spec.includes("=") ? parseLoraModule(spec) : { name: spec, path: spec },
      ),
    );
  }
  set("maxLoraRank", num("max-lora-rank", v["max-lora-rank"]));
  set("maxNumSeqs", num("max-num-seqs", v["max-num-seqs"]));
  set("maxNumBatchedTokens", num("max-num-batched-tokens", v["max-num-batched-tokens"]));
  set("maxModelLen", num("max-model-len", v["max-model-len"]));
  set("kvCacheTokens", num("kv-cache-tokens", v["kv-cache-tokens"]));
  set("apiKey", v["api-key"] ?? env.VLLM_API_KEY);
  set("loraModules", v["lora-modules"]?.map(parseLoraModule));
  set("enableLora", v["enable-lora"]);
  set("enablePrefixCaching", v["enable-prefix-caching"]);
  set("enablePromptTokensDetails", v["enable-prompt-tokens-details"]);
  set("enableForceIncludeUsage", v["enable-force-include-usage"]);
  set("enableServerLoadTracking", v["enable-server-load-tracking"]);
  set("unloadFreesEngine", v["unload-frees-engine"]);
  set("legacyErrors", v["legacy-errors"]);
  if (v.profile !== undefined) {
    if (!(VERSION_PROFILES as readonly string[]).includes(v.profile)) {
      throw new Error(
        `--profile expects one of ${VERSION_PROFILES.join(", ")}, got ${JSON.stringify(v.profile)}`,
      );
    }
    opts.profile = v.profile as VersionProfile;
  }
  set("maxLoraInfoSeries", num("max-lora-info-series", v["max-lora-info-series"]));
  set("naturalOutputTokens", natural);
  set("startupDelayMs", num("startup-ms", v["startup-ms"]));
  return opts;
}

/** `npm run replica-sim` and the image's `replica-sim` command. */
export async function runReplicaSimCli(): Promise<void> {
  // biome-ignore lint/style/noProcessEnv: the simulator reads vLLM's own variables, exactly as vLLM does
  const env = process.env;
  let opts: ReplicaSimOptions & { port: number; host: string };
  try {
    opts = parseCli(process.argv.slice(2), env);
  } catch (err) {
    process.stderr.write(`replica-sim: ${err instanceof Error ? err.message : String(err)}\n\n${USAGE}`);
    process.exit(2);
  }
  const { port, host, ...simOptions } = opts;
  const sim = createReplicaSim(simOptions);
  const c = sim.config;
  process.stdout.write(
    `INFO replica-sim: model=${c.model} served=${c.servedModelNames.join(",")} max_loras=${c.maxLoras} ` +
      `max_cpu_loras=${c.maxCpuLoras} max_lora_rank=${c.maxLoraRank} runtime_lora_updating=${c.allowRuntimeLoraUpdating} ` +
      `profile=${c.profile} version=${c.version}\n`,
  );
  const running = await sim.start(port, host);
  process.stdout.write(`INFO:     Uvicorn running on ${running.url} (Press CTRL+C to quit)\n`);
  let stopping = false;
  const stop = (): void => {
    if (stopping) {
      return;
    }
    stopping = true;
    void running.close().then(() => process.exit(0));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

if (import.meta.main) {
  runReplicaSimCli().catch((err: unknown) => {
    process.stderr.write(`replica-sim: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
