/**
 * The observable points of one cold request, each in epoch milliseconds, each read from the
 * component that owns it (sources in brackets). Pino and BullMQ stamp whole milliseconds, Postgres
 * microseconds, the client performance.now(): a phase is good to about ±1 ms.
 */
export interface ColdObservation {
  /** [client] just before the request is written. */
  sentAt: number;
  /** [client] the response's status line and headers arrived (undici resolves `request`). */
  firstByteAt: number;
  /** [client] the first body chunk arrived (the first SSE event). */
  firstChunkAt: number;
  /** [placement queue's event stream, Redis clock] `added`: the gateway enqueued its miss. */
  placementAdded: number;
  /** [same] `active`: the leader's placement worker took the job. */
  placementActive: number;
  /** [placements.created_at, Postgres now()] the decision's placement row (state loading). */
  placementRowCreated: number;
  /** [the replica's op queue's event stream] `added`: the load job was enqueued. */
  loadAdded: number;
  /** [same] `active`: the replica's worker started the load job. */
  loadActive: number;
  /** [agent log "adapter downloaded"] its time, and `downloadMs` (S3 GETs, sha256, write, fsync, rename). */
  downloadEnd: number;
  downloadMs: number;
  /** [agent log "adapter loaded"] its time, and `loadMs` (POST /v1/load_lora_adapter, as the agent timed it). */
  engineLoadEnd: number;
  engineLoadMs: number;
  /** [placements.updated_at, set by the load job when it marks the row loaded] */
  placementLoaded: number;
  /** [scheduler log "adapter loaded"] after the row is loaded and the event published. */
  schedulerLoadedLog: number;
  /** [the replica simulator's vllm:time_to_first_token_seconds_sum, delta over the request] */
  engineTtftMs: number;
  /** Attempts of the two jobs beyond the first (a retry is worth knowing about). */
  retries: number;
}

export type PhaseKey =
  | "queueing"
  | "gatewayMiss"
  | "placementQueue"
  | "decision"
  | "decisionToRow"
  | "loadQueue"
  | "fetch"
  | "engineLoad"
  | "agentOverhead"
  | "beforeFetch"
  | "betweenFetchAndLoad"
  | "afterLoad"
  | "firstByte"
  | "loadedToEvent"
  | "engineTtft"
  | "total"
  | "controlPlane";

export interface PhaseRow {
  key: PhaseKey;
  label: string;
  /** A part of the row above it, not a phase of its own (rows without `part` sum to `total`). */
  part?: boolean;
  /** Counted in the control plane's own share. */
  controlPlane?: boolean;
}

export const PHASE_ROWS: readonly PhaseRow[] = [
  {
    key: "queueing",
    label: "(1) queueing: request sent → placement job taken by the leader",
    controlPlane: true,
  },
  {
    key: "gatewayMiss",
    label: "gateway: request sent → miss enqueued (auth, resolve, admit, cold-load limit)",
    part: true,
  },
  { key: "placementQueue", label: "placement job waiting in its queue", part: true },
  {
    key: "decision",
    label: "(2) placement decision: fleet re-read, policy route, placement row, load job enqueued",
    controlPlane: true,
  },
  { key: "decisionToRow", label: "job taken → placement row written", part: true },
  { key: "loadQueue", label: "(3) load job waiting in the replica's queue", controlPlane: true },
  { key: "fetch", label: "(4) agent fetch from S3: download, sha256, write (excluded)" },
  { key: "engineLoad", label: "(5) engine load call: POST /v1/load_lora_adapter (excluded)" },
  {
    key: "agentOverhead",
    label: "load job and agent outside (4) and (5)",
    controlPlane: true,
  },
  {
    key: "beforeFetch",
    label: "job start → fetch start (row reads, agent call, /v1/models, temp dir)",
    part: true,
  },
  { key: "betweenFetchAndLoad", label: "fetch end → engine load start (cache metadata)", part: true },
  { key: "afterLoad", label: "engine load end → placement row loaded", part: true },
  {
    key: "firstByte",
    label: "(6) placement loaded → first byte at the client",
    controlPlane: true,
  },
  { key: "loadedToEvent", label: "row loaded → scheduler logs the load (event published)", part: true },
  { key: "engineTtft", label: "the engine's own time to first token (simulator)", part: true },
  { key: "total", label: "total: request sent → first byte" },
  { key: "controlPlane", label: "**control plane's own share** (total − (4) − (5))" },
];

export function phasesOf(o: ColdObservation): Record<PhaseKey, number> {
  const fetchStart = o.downloadEnd - o.downloadMs;
  const engineStart = o.engineLoadEnd - o.engineLoadMs;
  const total = o.firstByteAt - o.sentAt;
  return {
    queueing: o.placementActive - o.sentAt,
    gatewayMiss: o.placementAdded - o.sentAt,
    placementQueue: o.placementActive - o.placementAdded,
    decision: o.loadAdded - o.placementActive,
    decisionToRow: o.placementRowCreated - o.placementActive,
    loadQueue: o.loadActive - o.loadAdded,
    fetch: o.downloadMs,
    engineLoad: o.engineLoadMs,
    agentOverhead: o.placementLoaded - o.loadActive - o.downloadMs - o.engineLoadMs,
    beforeFetch: fetchStart - o.loadActive,
    betweenFetchAndLoad: engineStart - o.downloadEnd,
    afterLoad: o.placementLoaded - o.engineLoadEnd,
    firstByte: o.firstByteAt - o.placementLoaded,
    loadedToEvent: o.schedulerLoadedLog - o.placementLoaded,
    engineTtft: o.engineTtftMs,
    total,
    controlPlane: total - o.downloadMs - o.engineLoadMs,
  };
}

/** Nearest-rank percentile (q in 0..1) of unsorted values. */
export function percentile(values: readonly number[], q: number): number {
  if (values.length === 0) {
    return Number.NaN;
  }
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? Number.NaN;
}
