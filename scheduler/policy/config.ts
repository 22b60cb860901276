import type { EngineConfig } from "./engine.ts";
import type { PolicyConfig } from "./types.ts";

export const DEFAULT_CONFIG: EngineConfig = {
  halfLifeRequests: null,
  halfLifePerSlot: 64,
  tuneHalfLife: [4, 8, 16, 32, 64, 128, 256],
  departureSilence: 8,
  replicateAboveShare: 1,
  maxReplicas: Number.POSITIVE_INFINITY,
  // A register call pauses the replica for about 0.4 s; S3 to local disk at about 1 GB/s.
  loadCost: { fixedMs: 400, bytesPerMs: 1_000_000 },
};

export function resolveConfig(config: PolicyConfig): EngineConfig {
  const merged: EngineConfig = {
    halfLifeRequests: config.halfLifeRequests ?? DEFAULT_CONFIG.halfLifeRequests,
    halfLifePerSlot: config.halfLifePerSlot ?? DEFAULT_CONFIG.halfLifePerSlot,
    tuneHalfLife: config.tuneHalfLife === false ? [] : DEFAULT_CONFIG.tuneHalfLife,
    departureSilence: config.departureSilence ?? DEFAULT_CONFIG.departureSilence,
    replicateAboveShare: config.replicateAboveShare ?? DEFAULT_CONFIG.replicateAboveShare,
    maxReplicas: config.maxReplicas ?? DEFAULT_CONFIG.maxReplicas,
    loadCost: config.loadCost ?? DEFAULT_CONFIG.loadCost,
  };
  const positive = [
    merged.halfLifeRequests ?? 1,
    merged.halfLifePerSlot,
    merged.departureSilence,
    merged.replicateAboveShare,
  ];
  if (!positive.every((value) => value > 0)) {
    throw new RangeError(
      "halfLifeRequests, halfLifePerSlot, departureSilence and replicateAboveShare must be positive",
    );
  }
  if (!(merged.loadCost.fixedMs > 0) || !(merged.loadCost.bytesPerMs > 0)) {
    throw new RangeError("loadCost.fixedMs and loadCost.bytesPerMs must be positive");
  }
  return merged;
}
