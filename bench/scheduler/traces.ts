import { type AdapterSpec, createPrng, type Prng } from "../../scheduler/policy/index.ts";

export const BASE_MODEL = "llama-3.1-8b-instruct-awq";

/** A replayable demand trace: adapter ids in request order, and what the static oracle may know. */
export interface Trace {
  name: string;
  /** Requests are independent draws from a fixed distribution (the static oracle's home ground). */
  iid: boolean;
  adapters: AdapterSpec[];
  requests: string[];
  /** True popularity for i.i.d. traces; the whole trace's request counts otherwise. */
  popularity: Map<string, number>;
}

const RANKS = [8, 16, 32, 64] as const;
const RANK_WEIGHTS = [0.3, 0.4, 0.2, 0.1] as const;
/** fp16 LoRA on all linear modules of an 8B Llama is about 2.6 MB per unit of rank. */
const BYTES_PER_RANK = 2_600_000;

export function makeAdapters(count: number, prng: Prng): AdapterSpec[] {
  const adapters: AdapterSpec[] = [];
  for (let i = 0; i < count; i++) {
    let u = prng.next();
    let rank: number = RANKS[RANKS.length - 1] as number;
    for (let k = 0; k < RANKS.length; k++) {
      u -= RANK_WEIGHTS[k] as number;
      if (u < 0) {
        rank = RANKS[k] as number;
        break;
      }
    }
    adapters.push({
      id: `adp-${i.toString().padStart(5, "0")}`,
      baseModel: BASE_MODEL,
      rank,
      sizeBytes: rank * BYTES_PER_RANK,
    });
  }
  return adapters;
}

/** Cumulative Zipf(alpha) weights over ranks 1..n, normalised to 1. */
function zipfCdf(n: number, alpha: number): Float64Array {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let r = 0; r < n; r++) {
    sum += (r + 1) ** -alpha;
    cdf[r] = sum;
  }
  for (let r = 0; r < n; r++) {
    cdf[r] = (cdf[r] as number) / sum;
  }
  return cdf;
}

function sampleCdf(cdf: Float64Array, u: number): number {
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
  return lo;
}

/** Independent requests, Zipf(alpha) over `count` adapters in a random popularity order. */
export function zipfTrace(count: number, alpha: number, length: number, seed: number): Trace {
  const prng = createPrng(seed);
  const adapters = makeAdapters(count, prng);
  const order = prng.shuffle(adapters.map((a) => a.id));
  const cdf = zipfCdf(count, alpha);
  const popularity = new Map<string, number>();
  for (let r = 0; r < count; r++) {
    popularity.set(order[r] as string, (cdf[r] as number) - (r > 0 ? (cdf[r - 1] as number) : 0));
  }
  const requests: string[] = new Array(length);
  for (let i = 0; i < length; i++) {
    requests[i] = order[sampleCdf(cdf, prng.next())] as string;
  }
  return { name: `zipf α=${alpha}, ${count / 1000}k adapters`, iid: true, adapters, requests, popularity };
}

/**
 * Temporal locality and bursts, the shape of real multi-tenant traffic:
 * - 50% background Zipf(1.0) whose head drifts (every 500 requests a head adapter trades places
 *   with a random one);
 * - 30% sessions: 16 concurrent tenants' interactive sessions, each on one adapter picked at random,
 *   lasting a geometric number of requests (mean 300);
 * - 20% bursts: one batch job at a time hammers a random adapter, switching every ~2000 requests.
 */
export function localityTrace(count: number, length: number, seed: number): Trace {
  const prng = createPrng(seed);
  const adapters = makeAdapters(count, prng);
  const ids = adapters.map((a) => a.id);
  const order = prng.shuffle([...ids]);
  const cdf = zipfCdf(count, 1.0);
  const head = Math.max(1, Math.floor(count * 0.02));
  const sessions: { id: string; left: number }[] = [];
  const newSession = () => ({ id: prng.pick(ids), left: 1 + Math.floor(prng.exponential(300)) });
  for (let s = 0; s < 16; s++) {
    sessions.push(newSession());
  }
  let burst = prng.pick(ids);
  let burstLeft = prng.exponential(2000);
  const requests: string[] = new Array(length);
  const popularity = new Map<string, number>();
  for (let i = 0; i < length; i++) {
    if (i % 500 === 499) {
      const a = prng.int(head);
      const b = prng.int(count);
      const tmp = order[a] as string;
      order[a] = order[b] as string;
      order[b] = tmp;
    }
    burstLeft--;
    if (burstLeft <= 0) {
      burst = prng.pick(ids);
      burstLeft = prng.exponential(2000);
    }
    const u = prng.next();
    let id: string;
    if (u < 0.5) {
      id = order[sampleCdf(cdf, prng.next())] as string;
    } else if (u < 0.8) {
      const s = prng.int(sessions.length);
      const session = sessions[s] as { id: string; left: number };
      id = session.id;
      session.left--;
      if (session.left <= 0) {
        sessions[s] = newSession();
      }
    } else {
      id = burst;
    }
    requests[i] = id;
    popularity.set(id, (popularity.get(id) ?? 0) + 1);
  }
  return { name: `locality + bursts, ${count / 1000}k adapters`, iid: false, adapters, requests, popularity };
}
