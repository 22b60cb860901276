import { type AdapterSpec, createPrng } from "../policy/index.ts";

/** Every adapter of a plan shares one pool: the planner sizes one base model's replicas. */
export const PLAN_BASE = "plan-base";

/**
 * A demand trace in columns (a million requests stay a few typed arrays): request i asks for
 * `adapters[adapterIndex[i]]` at `arrivalMs[i]` (non-decreasing, from 0) with these token counts.
 */
export interface DemandTrace {
  adapters: AdapterSpec[];
  adapterIndex: Uint32Array;
  arrivalMs: Float64Array;
  promptTokens: Uint32Array;
  completionTokens: Uint32Array;
  /** Wall time the trace covers (≥ the last arrival); costs per month scale from it. */
  durationMs: number;
}

export interface SyntheticTraceSpec {
  adapters: number;
  requests: number;
  /** Mean arrivals per second (Poisson). */
  rate_per_sec: number;
  /** Zipf exponent of adapter popularity: 0 is uniform, 1.2 is a steep head. */
  skew: number;
  mean_prompt_tokens: number;
  mean_completion_tokens: number;
  seed: number;
}

const RANKS = [8, 16, 32, 64] as const;
const RANK_WEIGHTS = [0.3, 0.4, 0.2, 0.1] as const;
/** fp16 LoRA on all linear modules of an 8B Llama is about 2.6 MB per unit of rank. */
export const BYTES_PER_RANK = 2_600_000;

function pickRank(u: number): number {
  let left = u;
  for (let k = 0; k < RANKS.length; k++) {
    left -= RANK_WEIGHTS[k] as number;
    if (left < 0) {
      return RANKS[k] as number;
    }
  }
  return RANKS[RANKS.length - 1] as number;
}

/** Independent Zipf(skew) draws over `adapters` in a random popularity order, Poisson arrivals. */
export function syntheticTrace(spec: SyntheticTraceSpec): DemandTrace {
  const prng = createPrng(spec.seed);
  const adapters: AdapterSpec[] = [];
  for (let i = 0; i < spec.adapters; i++) {
    const rank = pickRank(prng.next());
    adapters.push({ id: `syn-${i}`, baseModel: PLAN_BASE, rank, sizeBytes: rank * BYTES_PER_RANK });
  }
  const order = new Uint32Array(spec.adapters);
  for (let i = 0; i < order.length; i++) {
    order[i] = i;
  }
  for (let i = order.length - 1; i > 0; i--) {
    const j = prng.int(i + 1);
    const tmp = order[i] as number;
    order[i] = order[j] as number;
    order[j] = tmp;
  }
  const cdf = new Float64Array(spec.adapters);
  let sum = 0;
  for (let r = 0; r < cdf.length; r++) {
    sum += (r + 1) ** -spec.skew;
    cdf[r] = sum;
  }
  const n = spec.requests;
  const trace: DemandTrace = {
    adapters,
    adapterIndex: new Uint32Array(n),
    arrivalMs: new Float64Array(n),
    promptTokens: new Uint32Array(n),
    completionTokens: new Uint32Array(n),
    durationMs: 0,
  };
  const meanGapMs = 1000 / spec.rate_per_sec;
  let t = 0;
  for (let i = 0; i < n; i++) {
    const u = prng.next() * sum;
    let lo = 0;
    let hi = cdf.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((cdf[mid] as number) < u) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    trace.adapterIndex[i] = order[lo] as number;
    trace.arrivalMs[i] = t;
    // Uniform in [0.5, 1.5) × the mean: spread without a heavy tail.
    trace.promptTokens[i] = Math.max(1, Math.round(spec.mean_prompt_tokens * (0.5 + prng.next())));
    trace.completionTokens[i] = Math.max(1, Math.round(spec.mean_completion_tokens * (0.5 + prng.next())));
    t += prng.exponential(meanGapMs);
  }
  trace.durationMs = Math.max(t, 1);
  return trace;
}

export interface ObservedRequest {
  adapterVersionId: string;
  rank: number;
  sizeBytes: number;
  occurredAt: Date;
  promptTokens: number;
  completionTokens: number;
}

/** Usage events (oldest first) as a trace; `fromMs`..`toMs` is the window they were read from. */
export function observedTrace(rows: readonly ObservedRequest[], fromMs: number, toMs: number): DemandTrace {
  const index = new Map<string, number>();
  const adapters: AdapterSpec[] = [];
  const n = rows.length;
  const trace: DemandTrace = {
    adapters,
    adapterIndex: new Uint32Array(n),
    arrivalMs: new Float64Array(n),
    promptTokens: new Uint32Array(n),
    completionTokens: new Uint32Array(n),
    durationMs: Math.max(1, toMs - fromMs),
  };
  for (let i = 0; i < n; i++) {
    const row = rows[i] as ObservedRequest;
    let at = index.get(row.adapterVersionId);
    if (at === undefined) {
      at = adapters.length;
      index.set(row.adapterVersionId, at);
      adapters.push({
        id: row.adapterVersionId,
        baseModel: PLAN_BASE,
        rank: row.rank,
        sizeBytes: row.sizeBytes,
      });
    }
    trace.adapterIndex[i] = at;
    trace.arrivalMs[i] = Math.max(0, row.occurredAt.getTime() - fromMs);
    trace.promptTokens[i] = row.promptTokens;
    trace.completionTokens[i] = row.completionTokens;
  }
  return trace;
}
