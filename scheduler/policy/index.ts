import { resolveConfig } from "./config.ts";
import { PolicyEngine } from "./engine.ts";
import { createGdsfRanker, createLruRanker } from "./rankers.ts";
import type { Policy, PolicyConfig, PolicyKind } from "./types.ts";

export { createBeladyPolicy, createStaticOracle } from "./offline.ts";
export { createPrng, type Prng } from "./prng.ts";
export type * from "./types.ts";

/**
 * `lru` evicts the least recently used adapter, as vLLM does (the baseline). `gdsf` ranks by decayed
 * frequency × load cost × tenant priority, so one-off requests only displace each other, and
 * replicates adapters whose traffic exceeds one replica's share. Feed it with `sync`.
 */
export function createPolicy(kind: PolicyKind, config: PolicyConfig = {}): Policy {
  const resolved = resolveConfig(config);
  const ranker =
    kind === "lru" ? createLruRanker() : createGdsfRanker({ departureSilence: resolved.departureSilence });
  return new PolicyEngine(kind, ranker, resolved);
}
