import {
  type Action,
  type CostLevel,
  createPolicy,
  type PolicyKind,
  type ReplicaSpec,
} from "../policy/index.ts";
import { type DemandTrace, PLAN_BASE } from "./trace.ts";

/**
 * A GPU's price and the simulator's latency model for it (infra/replica-sim `LatencyModel`: the
 * L4 profile is the simulator's default, the others scale it by memory bandwidth and FLOPs).
 */
export interface GpuProfile {
  name: string;
  price_per_hour_usd: number;
  prefill_tokens_per_sec: number;
  decode_ms_per_step: number;
  decode_ms_per_extra_seq: number;
  /** Sequences one replica decodes together (bounded by max_num_seqs and the KV cache). */
  max_batch: number;
  load_base_ms: number;
  load_ms_per_mb: number;
  reload_base_ms: number;
  reload_ms_per_mb: number;
  activate_ms_per_mb: number;
}

const LOAD_MODEL = {
  load_base_ms: 60,
  load_ms_per_mb: 3,
  reload_base_ms: 40,
  reload_ms_per_mb: 3,
  activate_ms_per_mb: 0.1,
};

/** On-demand prices per GPU-hour from public cloud price lists (2025–2026), one GPU per replica. */
export const GPU_PROFILES: Readonly<Record<string, GpuProfile>> = {
  "nvidia-l4": {
    name: "NVIDIA L4 24 GB",
    price_per_hour_usd: 0.8,
    prefill_tokens_per_sec: 3000,
    decode_ms_per_step: 22,
    decode_ms_per_extra_seq: 0.35,
    max_batch: 128,
    ...LOAD_MODEL,
  },
  "nvidia-a10g": {
    name: "NVIDIA A10G 24 GB",
    price_per_hour_usd: 1.01,
    prefill_tokens_per_sec: 4000,
    decode_ms_per_step: 11,
    decode_ms_per_extra_seq: 0.2,
    max_batch: 128,
    ...LOAD_MODEL,
  },
  "nvidia-l40s": {
    name: "NVIDIA L40S 48 GB",
    price_per_hour_usd: 1.86,
    prefill_tokens_per_sec: 9000,
    decode_ms_per_step: 8,
    decode_ms_per_extra_seq: 0.12,
    max_batch: 256,
    ...LOAD_MODEL,
  },
  "nvidia-h100": {
    name: "NVIDIA H100 80 GB",
    price_per_hour_usd: 2.99,
    prefill_tokens_per_sec: 25_000,
    decode_ms_per_step: 4,
    decode_ms_per_extra_seq: 0.04,
    max_batch: 256,
    ...LOAD_MODEL,
  },
};

export interface PlanAssumptions {
  replicas: number;
  /** GPU slots per replica (`--max-loras`). */
  max_loras: number;
  /** Engine CPU cache per replica (`--max-cpu-loras`, ≥ max_loras). */
  max_cpu_loras: number;
  /** Adapters a replica keeps registered (on its disk); POST /admin/replicas defaults it the same way. */
  max_registered: number;
  policy: PolicyKind;
  /**
   * What the leader's policy learns from: "all" is how the system runs (every gateway reports every
   * request it serves, scheduler/demand-reports.ts); "misses" models releases before that, when the
   * leader was asked only on a miss.
   */
  leader_sees: "misses" | "all";
  gpu: GpuProfile;
  /** A frontier API's list prices for the same tokens. */
  frontier: { name: string; input_per_mtok_usd: number; output_per_mtok_usd: number };
  /** "GPUs needed" meets these: a hit rate (fraction) and a busy fraction no replica should exceed. */
  target: { hit_rate: number; utilization: number };
  hours_per_month: number;
}

export function defaultAssumptions(
  replicas: number,
  maxLoras: number,
  overrides: Partial<Omit<PlanAssumptions, "replicas" | "max_loras">> = {},
): PlanAssumptions {
  const maxCpuLoras = overrides.max_cpu_loras ?? maxLoras;
  return {
    replicas,
    max_loras: maxLoras,
    max_cpu_loras: maxCpuLoras,
    max_registered: overrides.max_registered ?? Math.max(maxCpuLoras * 4, 8),
    policy: overrides.policy ?? "gdsf",
    leader_sees: overrides.leader_sees ?? "all",
    gpu: overrides.gpu ?? (GPU_PROFILES["nvidia-l4"] as GpuProfile),
    frontier: overrides.frontier ?? {
      name: "GPT-4o list price",
      input_per_mtok_usd: 2.5,
      output_per_mtok_usd: 10,
    },
    target: overrides.target ?? { hit_rate: 0.95, utilization: 0.7 },
    hours_per_month: overrides.hours_per_month ?? 730,
  };
}

export interface PlanResult {
  requests: number;
  adapters: number;
  duration_hours: number;
  hit_rate: number;
  hits_by_level: Record<CostLevel, number>;
  cold_starts: number;
  cold_starts_per_hour: number;
  evictions_per_hour: number;
  refusals: number;
  wait_ms: { p50: number; p95: number; p99: number };
  utilization: number;
  gpus_needed: {
    for_hit_rate: number | null;
    for_throughput: number;
    total: number | null;
  };
  tokens_per_month: { prompt: number; completion: number };
  cost_per_month_usd: {
    gpus: number;
    gpus_needed: number | null;
    frontier_api: number;
    savings: number;
  };
  /** Tokens per month at which the fleet's GPUs cost what the frontier API would. */
  break_even_tokens_per_month: number;
  fleet_capacity_tokens_per_month: number;
  replay_ms: number;
}

const LEVELS: readonly CostLevel[] = ["hot", "warm", "registered", "cold"];
/** The scheduler runs `plan` on a timer; the replay runs it every this many simulated ms. */
const PLAN_INTERVAL_MS = 5000;

/**
 * Replays a trace through the real placement policy (scheduler/policy) on a fleet of `replicas`
 * as the system runs it (the leader's policy decides each miss's load and eviction; hits are
 * served where the adapter is registered, hot first), and through a fluid model of each replica's GPU: a replica works off queued tokens at its
 * full-batch rate, and a load, reload or activation stalls it (and the request) for the
 * simulator's time. A request waits for the work ahead of it on its replica plus its own stall.
 */
export function planCapacity(trace: DemandTrace, a: PlanAssumptions): PlanResult {
  const started = performance.now();
  const specs: ReplicaSpec[] = [];
  for (let r = 0; r < a.replicas; r++) {
    specs.push({
      id: `plan-${r}`,
      baseModel: PLAN_BASE,
      maxLoras: a.max_loras,
      maxCpuLoras: a.max_cpu_loras,
      maxLoraRank: 64,
      maxRegistered: a.max_registered,
      diskBudgetBytes: Number.MAX_SAFE_INTEGER,
      healthy: true,
      draining: false,
    });
  }
  const policy = createPolicy(a.policy);
  policy.sync({ replicas: specs, adapters: trace.adapters, placements: [] });
  const replicaIndex = new Map(specs.map((s, i) => [s.id, i]));
  const adapterIndex = new Map(trace.adapters.map((s, i) => [s.id, i]));
  const freeAt = new Float64Array(a.replicas);
  const gpu = a.gpu;
  const stepMs = gpu.decode_ms_per_step + gpu.decode_ms_per_extra_seq * (gpu.max_batch - 1);
  const decodeMsPerToken = stepMs / gpu.max_batch;
  const prefillMsPerToken = 1000 / gpu.prefill_tokens_per_sec;
  const mb = trace.adapters.map((s) => s.sizeBytes / 1e6);

  const n = trace.adapterIndex.length;
  const waits = new Float64Array(n);
  const levels = { hot: 0, warm: 0, registered: 0, cold: 0 } satisfies Record<CostLevel, number>;
  let coldStarts = 0;
  let evictions = 0;
  let refusals = 0;
  let busyMs = 0;
  let promptTokens = 0;
  let completionTokens = 0;
  let nextPlanAt = PLAN_INTERVAL_MS;
  let served = 0;

  // The fleet as the gateway sees it: where each adapter is registered, and each replica's GPU
  // slots and CPU cache as LRU lists (vLLM's caches), most recent last.
  const holders: number[][] = trace.adapters.map(() => []);
  const hot: number[][] = specs.map(() => []);
  const warm: number[][] = specs.map(() => []);
  const touch = (list: number[], ai: number, cap: number) => {
    const at = list.indexOf(ai);
    if (at >= 0) {
      list.splice(at, 1);
    }
    list.push(ai);
    if (list.length > cap) {
      list.shift();
    }
  };
  const forget = (list: number[], ai: number) => {
    const at = list.indexOf(ai);
    if (at >= 0) {
      list.splice(at, 1);
    }
  };
  const levelOn = (r: number, ai: number): CostLevel =>
    (hot[r] as number[]).includes(ai) ? "hot" : (warm[r] as number[]).includes(ai) ? "warm" : "registered";

  const apply = (actions: readonly Action[]): number => {
    let stall = 0;
    for (const action of actions) {
      if (action.kind === "drained") {
        continue;
      }
      const ai = adapterIndex.get(action.adapterId) ?? -1;
      const r = replicaIndex.get(action.replicaId);
      if (action.kind === "load") {
        policy.observe({
          kind: "loaded",
          adapterId: action.adapterId,
          replicaId: action.replicaId,
          ok: true,
        });
        if (action.reason === "miss") {
          coldStarts++;
        }
        const cost = gpu.load_base_ms + gpu.load_ms_per_mb * (mb[ai] ?? 0);
        if (r !== undefined) {
          (holders[ai] as number[]).push(r);
          if (action.reason !== "miss") {
            // Background loads (replication, pins) pause the replica too.
            freeAt[r] = (freeAt[r] as number) + cost;
            busyMs += cost;
          }
        }
        stall += cost;
      } else if (action.kind === "unload") {
        evictions++;
        if (r !== undefined && ai >= 0) {
          forget(holders[ai] as number[], r);
          forget(hot[r] as number[], ai);
          forget(warm[r] as number[], ai);
        }
      }
    }
    return stall;
  };

  apply(policy.plan(0));
  for (let i = 0; i < n; i++) {
    const t = trace.arrivalMs[i] as number;
    if (t >= nextPlanAt) {
      apply(policy.plan(t));
      nextPlanAt = t + PLAN_INTERVAL_MS;
    }
    const ai = trace.adapterIndex[i] as number;
    const adapterId = (trace.adapters[ai] as { id: string }).id;
    const prompt = trace.promptTokens[i] as number;
    const completion = trace.completionTokens[i] as number;
    promptTokens += prompt;
    completionTokens += completion;
    const on = holders[ai] as number[];
    let r = -1;
    let level: CostLevel = "cold";
    let stall = 0;
    if (on.length > 0 && a.leader_sees === "misses") {
      // A hit: the gateway serves it where the adapter is cheapest to use, then least busy.
      // The leader's policy never hears of it (it is asked only on misses).
      let best = 4;
      for (const candidate of on) {
        const l = levelOn(candidate, ai);
        const rank = l === "hot" ? 0 : l === "warm" ? 1 : 2;
        if (rank < best || (rank === best && (freeAt[candidate] as number) < (freeAt[r] as number))) {
          best = rank;
          r = candidate;
          level = l;
        }
      }
    } else {
      const decision = policy.route({ adapterId }, t);
      if ("reason" in decision) {
        refusals++;
        continue;
      }
      r = replicaIndex.get(decision.replicaId) ?? 0;
      level = decision.level === "cold" ? "cold" : levelOn(r, ai);
      // Not admitted: the request's own time is modelled here, not as the policy's in-flight count.
      stall = decision.level === "cold" ? apply(decision.actions) : 0;
    }
    const size = mb[ai] ?? 0;
    if (level === "registered") {
      stall = gpu.reload_base_ms + gpu.reload_ms_per_mb * size;
    } else if (level === "warm") {
      stall = gpu.activate_ms_per_mb * size;
    }
    levels[level]++;
    touch(hot[r] as number[], ai, a.max_loras);
    touch(warm[r] as number[], ai, a.max_cpu_loras);
    const free = freeAt[r] as number;
    const queued = free > t ? free - t : 0;
    waits[served++] = queued + stall;
    const work = stall + prompt * prefillMsPerToken + completion * decodeMsPerToken;
    busyMs += work;
    freeAt[r] = Math.max(free, t) + work;
  }

  const durationMs = Math.max(trace.durationMs, trace.arrivalMs[n - 1] ?? 0, 1);
  const hours = durationMs / 3_600_000;
  const hits = served - levels.cold;
  // Refused requests are not waits: they show as `refusals` (and lower the hit rate).
  const sorted = waits.subarray(0, served).sort();
  const pct = (p: number) =>
    served === 0 ? 0 : (sorted[Math.min(served - 1, Math.max(0, Math.ceil(p * served) - 1))] as number);
  const utilization = busyMs / (durationMs * a.replicas);

  const forThroughput = Math.max(1, Math.ceil(busyMs / durationMs / a.target.utilization));
  const forHitRate = replicasForHitRate(trace, a.target.hit_rate, a.max_registered);
  const gpusNeeded = forHitRate === null ? null : Math.max(forThroughput, forHitRate);

  const perMonth = a.hours_per_month / hours;
  const monthPrompt = promptTokens * perMonth;
  const monthCompletion = completionTokens * perMonth;
  const frontier =
    (monthPrompt / 1e6) * a.frontier.input_per_mtok_usd +
    (monthCompletion / 1e6) * a.frontier.output_per_mtok_usd;
  const gpuMonth = a.replicas * gpu.price_per_hour_usd * a.hours_per_month;
  const totalTokens = promptTokens + completionTokens;
  const blendedPerToken =
    totalTokens === 0
      ? (a.frontier.input_per_mtok_usd + a.frontier.output_per_mtok_usd) / 2e6
      : (promptTokens * a.frontier.input_per_mtok_usd + completionTokens * a.frontier.output_per_mtok_usd) /
        (totalTokens * 1e6);
  const meanMsPerToken =
    totalTokens === 0
      ? decodeMsPerToken
      : (promptTokens * prefillMsPerToken + completionTokens * decodeMsPerToken) / totalTokens;

  return {
    requests: n,
    adapters: trace.adapters.length,
    duration_hours: hours,
    hit_rate: served === 0 ? 0 : hits / n,
    hits_by_level: levels,
    cold_starts: coldStarts,
    cold_starts_per_hour: coldStarts / hours,
    evictions_per_hour: evictions / hours,
    refusals,
    wait_ms: { p50: pct(0.5), p95: pct(0.95), p99: pct(0.99) },
    utilization,
    gpus_needed: { for_hit_rate: forHitRate, for_throughput: forThroughput, total: gpusNeeded },
    tokens_per_month: { prompt: monthPrompt, completion: monthCompletion },
    cost_per_month_usd: {
      gpus: gpuMonth,
      gpus_needed: gpusNeeded === null ? null : gpusNeeded * gpu.price_per_hour_usd * a.hours_per_month,
      frontier_api: frontier,
      savings: frontier - gpuMonth,
    },
    break_even_tokens_per_month: gpuMonth / blendedPerToken,
    fleet_capacity_tokens_per_month:
      (a.replicas * a.target.utilization * a.hours_per_month * 3_600_000) / meanMsPerToken,
    replay_ms: performance.now() - started,
  };
}

export { LEVELS as COST_LEVELS };

/**
 * The fewest replicas whose registration slots give `target` hit rate, from one pass of LRU stack
 * distances over the trace (Mattson), as if all slots were one LRU cache: an estimate (a leader that
 * learns only from misses evicts closer to FIFO and can need more; replay that count to check).
 * Null when even unlimited slots cannot (first requests always miss).
 */
export function replicasForHitRate(
  trace: DemandTrace,
  target: number,
  slotsPerReplica: number,
): number | null {
  const n = trace.adapterIndex.length;
  if (n === 0) {
    return 1;
  }
  const last = new Int32Array(trace.adapters.length).fill(-1);
  const tree = new Int32Array(n + 1);
  const add = (pos: number, delta: number) => {
    for (let k = pos + 1; k <= n; k += k & -k) {
      tree[k] = (tree[k] as number) + delta;
    }
  };
  const prefix = (pos: number) => {
    let s = 0;
    for (let k = pos + 1; k > 0; k -= k & -k) {
      s += tree[k] as number;
    }
    return s;
  };
  // distances[d] = requests whose LRU stack distance is d (1 = most recent); compulsory misses excluded.
  const distances = new Uint32Array(trace.adapters.length + 2);
  let live = 0;
  for (let i = 0; i < n; i++) {
    const ai = trace.adapterIndex[i] as number;
    const prev = last[ai] as number;
    if (prev >= 0) {
      const d = live - prefix(prev) + 1;
      distances[d] = (distances[d] as number) + 1;
      add(prev, -1);
    } else {
      live++;
    }
    add(i, 1);
    last[ai] = i;
  }
  const needed = Math.ceil(target * n);
  let hits = 0;
  for (let d = 1; d < distances.length; d++) {
    hits += distances[d] as number;
    if (hits >= needed) {
      return Math.max(1, Math.ceil(d / slotsPerReplica));
    }
  }
  return null;
}
