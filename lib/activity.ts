/** The cost level a routed request met (see ARCHITECTURE.md, "Where an adapter lives"). */
export type RouteLevel = "hot" | "warm" | "registered" | "cold";

interface Entry {
  at: number;
  /** A level for routes; "load" or "evict" for placement changes. */
  kind: RouteLevel | "load" | "evict";
  replicaId: string | null;
  /** Cold starts: the time the request waited for its load. */
  ms: number;
}

export interface ActivitySnapshot {
  window_seconds: number;
  routed: Record<RouteLevel, number>;
  cold_start_ms: { count: number; p50: number | null; p95: number | null };
  loads: number;
  evictions: number;
  by_replica: Record<string, { loads: number; evictions: number }>;
}

const LEVELS: readonly RouteLevel[] = ["hot", "warm", "registered", "cold"];

/**
 * Recent routing outcomes and placement changes seen by this process, kept in memory (bounded):
 * what the console shows as hit rate by cost level, cold-start latency and loads/evictions per
 * hour. Each API copy counts its own routes; loads and evictions come from the fleet event bus.
 */
export class ActivityLog {
  private readonly entries: Entry[] = [];
  /** Tenant → times of requests refused by its rate limit (trimmed to the last hour on read). */
  private readonly limited = new Map<string, number[]>();
  private readonly capacity: number;

  constructor(capacity = 200_000) {
    this.capacity = capacity;
  }

  private push(entry: Entry): void {
    this.entries.push(entry);
    if (this.entries.length > this.capacity) {
      this.entries.splice(0, this.entries.length - this.capacity);
    }
  }

  route(level: RouteLevel, coldStartMs = 0, at = Date.now()): void {
    this.push({ at, kind: level, replicaId: null, ms: coldStartMs });
  }

  placement(kind: "load" | "evict", replicaId: string, at = Date.now()): void {
    this.push({ at, kind, replicaId, ms: 0 });
  }

  rateLimited(tenantId: string, at = Date.now()): void {
    const times = this.limited.get(tenantId) ?? [];
    times.push(at);
    if (times.length > 10_000) {
      times.splice(0, times.length - 10_000);
    }
    this.limited.set(tenantId, times);
  }

  /** Requests each tenant's rate limit refused in the window (this process's). */
  rateLimitHits(windowMs: number, now = Date.now()): Map<string, number> {
    const since = now - windowMs;
    const hits = new Map<string, number>();
    for (const [tenantId, times] of this.limited) {
      const recent = times.filter((t) => t >= since);
      if (recent.length === 0) {
        this.limited.delete(tenantId);
      } else {
        this.limited.set(tenantId, recent);
        hits.set(tenantId, recent.length);
      }
    }
    return hits;
  }

  snapshot(windowMs: number, now = Date.now()): ActivitySnapshot {
    const since = now - windowMs;
    const routed = { hot: 0, warm: 0, registered: 0, cold: 0 } satisfies Record<RouteLevel, number>;
    const cold: number[] = [];
    const byReplica: Record<string, { loads: number; evictions: number }> = {};
    let loads = 0;
    let evictions = 0;
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i] as Entry;
      if (e.at < since) {
        break;
      }
      if (e.kind === "load" || e.kind === "evict") {
        const key = e.replicaId ?? "";
        const row = byReplica[key] ?? { loads: 0, evictions: 0 };
        byReplica[key] = row;
        if (e.kind === "load") {
          loads++;
          row.loads++;
        } else {
          evictions++;
          row.evictions++;
        }
      } else if (LEVELS.includes(e.kind)) {
        routed[e.kind]++;
        if (e.kind === "cold") {
          cold.push(e.ms);
        }
      }
    }
    cold.sort((a, b) => a - b);
    const pct = (p: number) =>
      cold.length === 0 ? null : (cold[Math.min(cold.length - 1, Math.ceil(p * cold.length) - 1)] ?? null);
    return {
      window_seconds: windowMs / 1000,
      routed,
      cold_start_ms: { count: cold.length, p50: pct(0.5), p95: pct(0.95) },
      loads,
      evictions,
      by_replica: byReplica,
    };
  }
}
