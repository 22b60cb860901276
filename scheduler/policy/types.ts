/** What using an adapter on a replica costs, cheapest first (see ARCHITECTURE.md, "Where an adapter lives"). */
export type CostLevel = "hot" | "warm" | "registered" | "cold";

export interface ReplicaSpec {
  id: string;
  baseModel: string;
  /** GPU slots (`--max-loras`): distinct adapters one batch can mix. */
  maxLoras: number;
  /** Engine CPU LRU (`--max-cpu-loras`), ≥ maxLoras. */
  maxCpuLoras: number;
  /** `--max-lora-rank`: every slot is padded to it, and no adapter of a higher rank can load. */
  maxLoraRank: number;
  /** Registration budget: how many adapter names the replica keeps registered (files on its disk). */
  maxRegistered: number;
  /** Bytes of adapter files the replica may keep on disk while registered. */
  diskBudgetBytes: number;
  healthy: boolean;
  draining: boolean;
}

export interface AdapterSpec {
  /** The replica-side name of one adapter version (each version is loaded under its own name). */
  id: string;
  baseModel: string;
  rank: number;
  sizeBytes: number;
  /** Tenant plan weight; 1 is the default, 2 values a request twice as much. */
  priority?: number;
  /** Keep registered on this many replicas, never evicted while pinned (operator or tenant plan). */
  pinReplicas?: number;
}

export interface PlacementSpec {
  adapterId: string;
  replicaId: string;
  /** `loading` while a load job runs; requests routed there wait for it. */
  state?: "ready" | "loading";
}

/** Decayed request counts, to carry what one leader learned over to the next. */
export interface DemandSnapshot {
  entries: readonly { adapterId: string; weight: number; lastUsedAt: number }[];
}

/** What the scheduler's I/O layer feeds from the database and the replica poller. */
export interface FleetState {
  replicas: readonly ReplicaSpec[];
  adapters: readonly AdapterSpec[];
  placements: readonly PlacementSpec[];
  demand?: DemandSnapshot;
}

export interface RouteRequest {
  adapterId: string;
  /**
   * "serve" (default): a request to run now, counted in the adapter's demand, sent only where the
   * engine can take one more distinct adapter (`max_loras`). "place": the leader making sure the
   * adapter is registered somewhere: not counted (the gateways report every request they serve,
   * `served` events, the one that missed included), and a replica busy with `max_loras` other
   * adapters still takes it (the engine queues the request until a slot frees).
   */
  mode?: "serve" | "place";
}

export type LoadReason = "miss" | "replicate" | "pin" | "drain";
export type UnloadReason = "evict" | "dereplicate" | "drain";

/** Executed in array order: an eviction comes before the load that needs its room. */
export type Action =
  | { kind: "load"; adapterId: string; replicaId: string; reason: LoadReason }
  | { kind: "unload"; adapterId: string; replicaId: string; reason: UnloadReason }
  /** The draining replica holds nothing and serves nothing: it may leave. */
  | { kind: "drained"; replicaId: string };

export interface RouteDecision {
  replicaId: string;
  level: CostLevel;
  /** Loads and evictions this request needs before it can run (empty on a hit). */
  actions: readonly Action[];
  /**
   * Counts the request in flight on `replicaId`, until its `completed` event: call it at once when
   * the request will run there. A decision not admitted (a placement, a request sent elsewhere)
   * leaves nothing to undo. Calling it again does nothing.
   */
  admit(): void;
}

export type RefusalReason =
  /** Not in the fleet state: an unknown or deleted adapter version. */
  | "unknown-adapter"
  /** No healthy, non-draining replica of this base accepts the adapter's rank and size. */
  | "no-eligible-replica"
  /** Every registration slot that could take it is pinned, or busy with requests in flight. */
  | "no-capacity"
  /** Every replica that could serve it already runs `max_loras` distinct adapters. */
  | "slots-busy";

export interface RouteRefusal {
  reason: RefusalReason;
  /** True when a completion can change the answer: queue the request and route it again. */
  retryable: boolean;
  detail: string;
}

export type RouteResult = RouteDecision | RouteRefusal;

export type PolicyEvent =
  /** A request admitted by a `route` decision finished, failed or was cancelled. */
  | { kind: "completed"; adapterId: string; replicaId: string }
  /** A load this policy asked for finished. On failure the placement is dropped. */
  | { kind: "loaded"; adapterId: string; replicaId: string; ok: boolean }
  /**
   * Requests the gateways served (hits and cold starts alike), as they report them: counted in the
   * adapter's demand as if this policy had routed them, and the adapter used on `replicaId` (null:
   * not yet on any). At most `MAX_SERVED_PER_EVENT` are counted from one event.
   */
  | { kind: "served"; adapterId: string; replicaId: string | null; requests: number; now: number }
  /**
   * How many requests for the adapter run on the replica now, summed over the gateways: the
   * policy keeps the adapter there while any do (replaces the count, it does not add to it).
   */
  | { kind: "in-flight"; adapterId: string; replicaId: string; count: number };

export interface PolicyConfig {
  /** Demand counters halve every this many requests to the same base (fixed). */
  halfLifeRequests?: number;
  /** Unless fixed: the half-life is this many requests per registration slot of the base (the start). */
  halfLifePerSlot?: number;
  /** Unless false: pick the half-life per slot online from miniature simulations (cost-aware policy). */
  tuneHalfLife?: boolean;
  /**
   * Cost-aware policy: an adapter silent for this many of its mean gaps between requests is presumed
   * gone (a finished session or burst) and evicted before anything else (Infinity: never).
   */
  departureSilence?: number;
  /** An adapter gets another replica for each time its traffic exceeds this fraction of one replica's share. */
  replicateAboveShare?: number;
  /** Cap on replicas for one adapter (pins excepted). */
  maxReplicas?: number;
  /** What a cold load costs: a fixed pause plus transfer time. Cost-aware policies weigh keeping by it. */
  loadCost?: { fixedMs: number; bytesPerMs: number };
}

export type PolicyKind = "lru" | "gdsf";

export interface ReplicaShadow {
  replicaId: string;
  /** Registered (or loading) adapters. */
  registered: string[];
  /** The engine's GPU slots as we mirror them, most recent last. May hold unregistered ghosts. */
  hot: string[];
  /** The engine's CPU LRU as we mirror it, most recent last. */
  warm: string[];
  /** Adapter → requests in flight. */
  inFlight: Record<string, number>;
}

export interface Policy {
  readonly kind: string;
  /** Replace the fleet, adapters and placements with the database's view; keeps learned demand. */
  sync(fleet: FleetState): void;
  /**
   * Pick the replica and cost level for one request; the actions it returns are assumed done or
   * under way. The request counts in flight only once the decision is admitted.
   */
  route(request: RouteRequest, now: number): RouteResult;
  observe(event: PolicyEvent): void;
  /** Background actions: pin enforcement, replication of hot adapters, draining moves. */
  plan(now: number): Action[];
  shadow(replicaId: string): ReplicaShadow | null;
  /** Decayed share of its base's traffic, in [0, 1]. */
  demandShare(adapterId: string): number;
  exportDemand(): DemandSnapshot;
}
