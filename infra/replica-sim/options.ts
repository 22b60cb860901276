import { type AdapterRules, LLAMA_31_8B_MODULES, LLAMA_EXPECTED_MODULES } from "./adapter-files.ts";
import { L4_LATENCY, type LatencyModel } from "./engine.ts";

export interface StaticLoraModule {
  name: string;
  path: string;
  baseModelName?: string;
}

/**
 * The vLLM releases the simulator can answer like (README "Version profiles"):
 * - `"current"`: vLLM main as `shared/vllm-replica-protocol.md` describes it.
 * - `"v0.11"`: vLLM v0.11.0 (2025-10): load failures are 400, no `load_inplace`, separate
 *   running/waiting sets in `vllm:lora_requests_info`, no `vllm:num_requests_waiting_by_reason`.
 */
export type VersionProfile = "v0.11" | "current";
export const VERSION_PROFILES: readonly VersionProfile[] = ["v0.11", "current"];

/** What a profile changes; each field is one protocol difference between the releases. */
export interface ProfileBehaviour {
  /** `/version` and `system_fingerprint`. */
  version: string;
  /**
   * Status of a rejected `load_lora_adapter` (engine-side `add_lora` failure): 400 BadRequestError
   * in v0.11 (vllm/entrypoints/openai/serving_models.py @ 0f1457b0 and later copies:
   * `status_code = HTTPStatus.BAD_REQUEST`), 500 InternalServerError since 2026-03
   * (vllm/entrypoints/openai/models/serving.py @ 00153c8b: `status_code=HTTPStatus.INTERNAL_SERVER_ERROR`).
   */
  loadFailureStatus: 400 | 500;
  /**
   * `load_inplace` (since 2026-01): without it the field is ignored, a duplicate name is always
   * refused, and the refusal reads only "The lora adapter '<n>' has already been loaded."
   */
  loadInplace: boolean;
  /**
   * `vllm:lora_requests_info` labels. `"split"` (v0.11, vllm/v1/metrics/stats.py @ 28ed1fb8
   * `update_iteration_stats`): running = adapters with a scheduled request, waiting = adapters with
   * a queued one. `"same"` (since PR #26801, 2025-11, `update_scheduler_stats`): both labels list
   * every adapter with any queued or running request.
   */
  loraInfoLabels: "split" | "same";
  /**
   * `vllm:num_requests_waiting_by_reason{reason="capacity"|"deferred"}`: added by PR #38435
   * (2026-03/04); vllm/v1/metrics/loggers.py @ 005a810b has only the running and waiting totals.
   */
  waitingByReasonMetric: boolean;
}

export const PROFILE_BEHAVIOUR: Readonly<Record<VersionProfile, Readonly<ProfileBehaviour>>> = {
  "v0.11": {
    version: "0.11.0",
    loadFailureStatus: 400,
    loadInplace: false,
    loraInfoLabels: "split",
    waitingByReasonMetric: false,
  },
  current: {
    version: "0.21.0",
    loadFailureStatus: 500,
    loadInplace: true,
    loraInfoLabels: "same",
    waitingByReasonMetric: true,
  },
};

/** Everything a simulated replica can be started with; each field mirrors a vLLM flag or quirk. */
export interface ReplicaSimOptions {
  /**
   * Which engine's HTTP protocol to speak (default "vllm"). `"sglang"` answers like SGLang's
   * http_server.py (README "SGLang mode"): there `maxLoras` is `--max-loras-per-batch` and
   * `maxCpuLoras` is `--max-loaded-loras`.
   */
  engine?: "vllm" | "sglang";
  /** SGLang `--admin-api-key`: the only key the admin routes (load/unload) accept when set. */
  adminApiKey?: string;
  /** Which vLLM release to answer like (default "current"); sets the defaults of the switches below. */
  profile?: VersionProfile;
  /** `--model`: shown as `root` of the base cards. */
  model?: string;
  /** `--served-model-name` (several allowed); defaults to the model. */
  servedModelNames?: readonly string[];
  /** `VLLM_ALLOW_RUNTIME_LORA_UPDATING`. Defaults to true here: every loraplane replica sets it. */
  allowRuntimeLoraUpdating?: boolean;
  /** `--enable-lora` (default true). */
  enableLora?: boolean;
  maxLoras?: number;
  /** Defaults to maxLoras, as in vLLM. */
  maxCpuLoras?: number;
  maxLoraRank?: number;
  maxNumSeqs?: number;
  maxNumBatchedTokens?: number;
  maxModelLen?: number;
  /** KV cache size in tokens (what vLLM logs as "GPU KV cache size"). */
  kvCacheTokens?: number;
  enablePrefixCaching?: boolean;
  apiKey?: string;
  enablePromptTokensDetails?: boolean;
  enableForceIncludeUsage?: boolean;
  enableServerLoadTracking?: boolean;
  /** `--lora-modules`: loaded at startup; any failure aborts startup. */
  loraModules?: readonly StaticLoraModule[];
  latency?: Partial<LatencyModel>;
  /** How many tokens (EOS included) the model emits when max_tokens does not cut it short. */
  naturalOutputTokens?: { min: number; max: number };
  /** Reported by /version and in system_fingerprint (default: the profile's release). */
  version?: string;
  /** Time between start() and the port accepting connections (model load). */
  startupDelayMs?: number;
  /** Base for relative lora paths (vLLM's working directory). */
  cwd?: string;
  /** Rust-frontend behaviour: unload also drops the weights from the engine caches. */
  unloadFreesEngine?: boolean;
  /**
   * Replicas before 2025-08 answer errors as flat `{"object":"error",…}`, and load failures as 400
   * (whatever the profile). v0.11 already uses the nested `{"error":{…}}` shape.
   */
  legacyErrors?: boolean;
  /**
   * `vllm:lora_requests_info` series kept, the stalest dropped beyond it. vLLM keeps every adapter
   * set it ever saw (default: unbounded, as vLLM); long benchmarks may bound it.
   */
  maxLoraInfoSeries?: number;
  /** Overrides the base model's LoRA module shapes used to reject adapters trained for another base. */
  adapterRules?: Partial<Pick<AdapterRules, "moduleDims" | "expectedModules">>;
}

export interface SimConfig extends ProfileBehaviour {
  profile: VersionProfile;
  model: string;
  servedModelNames: readonly string[];
  allowRuntimeLoraUpdating: boolean;
  enableLora: boolean;
  maxLoras: number;
  maxCpuLoras: number;
  maxLoraRank: number;
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
  maxModelLen: number;
  kvCacheTokens: number;
  enablePrefixCaching: boolean;
  apiKey: string | undefined;
  enablePromptTokensDetails: boolean;
  enableForceIncludeUsage: boolean;
  enableServerLoadTracking: boolean;
  loraModules: readonly StaticLoraModule[];
  latency: LatencyModel;
  naturalOutputTokens: { min: number; max: number };
  startupDelayMs: number;
  cwd: string;
  unloadFreesEngine: boolean;
  legacyErrors: boolean;
  maxLoraInfoSeries: number;
  adapterRules: AdapterRules;
}

export const DEFAULT_MODEL = "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4";
export const ALLOWED_LORA_RANKS = [1, 8, 16, 32, 64, 128, 256, 320, 512] as const;

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) {
    throw new Error(`${name} must be a positive integer, got ${v}`);
  }
  return v;
}

/** Applies vLLM's defaults and the startup checks vLLM makes; throws what vLLM would refuse. */
export function resolveSimConfig(o: ReplicaSimOptions): SimConfig {
  const model = o.model ?? DEFAULT_MODEL;
  const served = o.servedModelNames && o.servedModelNames.length > 0 ? [...o.servedModelNames] : [model];
  const maxLoras = positiveInt("max_loras", o.maxLoras ?? 1);
  const maxCpuLoras = positiveInt("max_cpu_loras", o.maxCpuLoras ?? maxLoras);
  if (maxCpuLoras < maxLoras) {
    throw new Error(`max_cpu_loras (${maxCpuLoras}) must be >= max_loras (${maxLoras})`);
  }
  const maxLoraRank = o.maxLoraRank ?? 16;
  if (!(ALLOWED_LORA_RANKS as readonly number[]).includes(maxLoraRank)) {
    throw new Error(`max_lora_rank (${maxLoraRank}) must be one of ${ALLOWED_LORA_RANKS.join(", ")}`);
  }
  const maxModelLen = positiveInt("max_model_len", o.maxModelLen ?? 8192);
  const kvCacheTokens = positiveInt("kv_cache_tokens", o.kvCacheTokens ?? 100_000);
  if (kvCacheTokens < maxModelLen) {
    throw new Error(
      `The model's max seq len (${maxModelLen}) is larger than the maximum number of tokens that can be stored in KV cache (${kvCacheTokens}).`,
    );
  }
  const latency: LatencyModel = { ...L4_LATENCY, ...o.latency };
  for (const [k, v] of Object.entries(latency)) {
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
      throw new Error(`latency.${k} must be a non-negative number`);
    }
  }
  if (latency.prefillTokensPerSec <= 0) {
    throw new Error("latency.prefillTokensPerSec must be positive");
  }
  const profile = o.profile ?? "current";
  const behaviour = PROFILE_BEHAVIOUR[profile];
  if (!behaviour) {
    throw new Error(`profile must be one of ${VERSION_PROFILES.join(", ")}, got ${String(profile)}`);
  }
  const legacyErrors = o.legacyErrors ?? false;
  const natural = o.naturalOutputTokens ?? { min: 24, max: 200 };
  if (natural.min < 1 || natural.max < natural.min) {
    throw new Error("naturalOutputTokens needs 1 <= min <= max");
  }
  return {
    ...behaviour,
    profile,
    // Flat legacy errors predate v0.11, so they also mean 400 load failures.
    loadFailureStatus: legacyErrors ? 400 : behaviour.loadFailureStatus,
    version: o.version ?? behaviour.version,
    model,
    servedModelNames: served,
    allowRuntimeLoraUpdating: o.allowRuntimeLoraUpdating ?? true,
    enableLora: o.enableLora ?? true,
    maxLoras,
    maxCpuLoras,
    maxLoraRank,
    maxNumSeqs: positiveInt("max_num_seqs", o.maxNumSeqs ?? 256),
    maxNumBatchedTokens: positiveInt("max_num_batched_tokens", o.maxNumBatchedTokens ?? 2048),
    maxModelLen,
    kvCacheTokens,
    enablePrefixCaching: o.enablePrefixCaching ?? true,
    apiKey: o.apiKey === "" ? undefined : o.apiKey,
    enablePromptTokensDetails: o.enablePromptTokensDetails ?? false,
    enableForceIncludeUsage: o.enableForceIncludeUsage ?? false,
    enableServerLoadTracking: o.enableServerLoadTracking ?? false,
    loraModules: o.loraModules ?? [],
    latency,
    naturalOutputTokens: natural,
    startupDelayMs: o.startupDelayMs ?? 0,
    cwd: o.cwd ?? process.cwd(),
    unloadFreesEngine: o.unloadFreesEngine ?? false,
    legacyErrors,
    maxLoraInfoSeries: o.maxLoraInfoSeries ?? Number.POSITIVE_INFINITY,
    adapterRules: {
      maxLoraRank,
      moduleDims: o.adapterRules?.moduleDims ?? LLAMA_31_8B_MODULES,
      expectedModules: o.adapterRules?.expectedModules ?? LLAMA_EXPECTED_MODULES,
    },
  };
}
