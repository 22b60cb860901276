import { type ReplicaSimOptions, resolveSimConfig, type SimConfig } from "./options.ts";

/**
 * SGLang's release the simulator answers like: `python/sglang/version.py` @ 0175ceec
 * (`__version__ = "0.5.3rc2"`), reported by `/server_info` as `version`.
 */
export const SGLANG_VERSION = "0.5.3rc2";

/** SGLang's `--max-loras-per-batch` default (server_args.py; docs/advanced_features/lora.ipynb @ 034b3be8). */
export const SGLANG_DEFAULT_MAX_LORAS_PER_BATCH = 8;

/** The resolved flags of a simulated SGLang server; the vLLM-shaped fields keep the shared interface. */
export interface SglangSimConfig extends SimConfig {
  engine: "sglang";
  /** `--max-loras-per-batch`: GPU LoRA pool slots, so the most adapters one batch can mix. */
  maxLorasPerBatch: number;
  /** `--max-loaded-loras`: adapters registered at once (null: unbounded, SGLang's default). */
  maxLoadedLoras: number | null;
  /** `--admin-api-key`. */
  adminApiKey: string | undefined;
}

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) {
    throw new Error(`${name} must be a positive integer, got ${v}`);
  }
  return v;
}

/**
 * Maps the shared options onto SGLang's flags: `maxLoras` is `--max-loras-per-batch` (default 8),
 * `maxCpuLoras` is `--max-loaded-loras` (default unbounded; SGLang requires it to be at least
 * `--max-loras-per-batch`), `maxLoraRank` any positive integer (default 16 here; SGLang infers it
 * from `--lora-paths` or needs it given).
 */
export function resolveSglangConfig(o: ReplicaSimOptions): SglangSimConfig {
  const maxLorasPerBatch = positiveInt(
    "max_loras_per_batch",
    o.maxLoras ?? SGLANG_DEFAULT_MAX_LORAS_PER_BATCH,
  );
  const maxLoadedLoras = o.maxCpuLoras === undefined ? null : positiveInt("max_loaded_loras", o.maxCpuLoras);
  if (maxLoadedLoras !== null && maxLoadedLoras < maxLorasPerBatch) {
    throw new Error(
      `max_loaded_loras (${maxLoadedLoras}) must be >= max_loras_per_batch (${maxLorasPerBatch})`,
    );
  }
  const maxLoraRank = positiveInt("max_lora_rank", o.maxLoraRank ?? 16);
  // The vLLM resolution applies the shared defaults (model, lengths, latency, …); its vLLM-only rank
  // rule is sidestepped and the SGLang values are laid over it.
  const base = resolveSimConfig({
    ...o,
    engine: "vllm",
    maxLoras: maxLorasPerBatch,
    maxCpuLoras: maxLoadedLoras ?? maxLorasPerBatch,
    maxLoraRank: 16,
    loraModules: [],
  });
  return {
    ...base,
    engine: "sglang",
    servedModelNames: base.servedModelNames.slice(0, 1),
    maxLoraRank,
    maxCpuLoras: maxLoadedLoras ?? Number.POSITIVE_INFINITY,
    maxLorasPerBatch,
    maxLoadedLoras,
    loraModules: o.loraModules ?? [],
    adminApiKey: o.adminApiKey === "" ? undefined : o.adminApiKey,
    adapterRules: { ...base.adapterRules, maxLoraRank },
    version: o.version ?? SGLANG_VERSION,
  };
}
