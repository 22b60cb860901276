import type { Queue } from "bullmq";
import type { Database } from "../../db/index.ts";
import {
  listVersionPlacements,
  loadFleetSnapshot,
  type ReplicaRow,
  replicaIsDraining,
  replicaIsUp,
} from "../../db/index.ts";
import { ENGINE_DRIVERS } from "../../engines/index.ts";
import type { Logger } from "../../lib/index.ts";
import type { EventBus, FleetEvent } from "../../scheduler/index.ts";
import {
  type CostLevel,
  createPolicy,
  PLACEMENT_JOB,
  type PlacementRequest,
  type Policy,
  type PolicyKind,
  placementJobId,
  type ReplicaShadow,
  toFleetState,
} from "../../scheduler/index.ts";
import type { UpstreamTarget } from "./forward/index.ts";

/**
 * Targets the router handed out for one request, best first, and what it counts for them (the
 * request in flight on the first, for the policy and for balancing) until `release`, once.
 */
export interface RouteHold {
  targets: UpstreamTarget[];
  /** What the first target costs (null for a base model: no adapter to be hot or cold there). */
  level: CostLevel | null;
  release(): void;
}

export type AdapterRoute =
  | { kind: "hit"; hold: RouteHold }
  | { kind: "miss" }
  | { kind: "busy"; detail: string }
  /** This gateway has not seen the version yet (just uploaded): sync and ask again. */
  | { kind: "stale" }
  | { kind: "unavailable"; detail: string };

const LOST_MARK_MS = 60_000;

export type PlacementWait = { kind: "loaded" } | { kind: "failed"; message: string } | { kind: "timeout" };

interface Waiter {
  resolve: (result: PlacementWait) => void;
}

/**
 * The gateway's view of the fleet, kept in memory so that routing needs no database round trip:
 * replicas and placements from Postgres (re-read on every fleet event and every `syncEveryMs`),
 * and a policy instance that mirrors each replica's hot set from the requests this gateway routes.
 * Placement itself is the scheduler leader's: a miss enqueues one deduplicated request for it.
 */
export class GatewayRouter {
  private policy: Policy;
  private replicas = new Map<string, ReplicaRow>();
  private loadedOn = new Map<string, string[]>();
  private readonly inFlight = new Map<string, number>();
  /** Replicas that failed a request before its first byte, and when: avoided until polled good since. */
  private readonly suspects = new Map<string, number>();
  /**
   * Versions a replica answered it does not have (it restarted), keyed `replica version`: not asked
   * there again while the placement row stands (until the leader drops it), or for a minute at most.
   */
  private readonly lost = new Map<string, number>();
  /** When this API copy last reported each replica to the leader: one report a second at most. */
  private readonly reported = new Map<string, number>();
  private readonly waiters = new Map<string, Set<Waiter>>();
  /** The fair-queue priority each waited-for version was first asked for with (kept for re-asks). */
  private readonly placementPriority = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private contextByBase = new Map<string, number>();
  private syncing: Promise<void> | null = null;
  /** The read after the one under way, shared by every `sync()` call made while that one runs. */
  private nextSync: Promise<void> | null = null;
  private unsubscribe: (() => void) | null = null;
  private readonly db: Database;
  private readonly bus: EventBus;
  private readonly placementQueue: Queue;
  private readonly beforePlacement: () => Promise<void>;
  private readonly logger: Logger;
  private readonly syncEveryMs: number;
  private readonly onAdaptersChanged: (tenantId: string) => void;

  constructor(options: {
    db: Database;
    bus: EventBus;
    placementQueue: Queue;
    logger: Logger;
    policy: PolicyKind;
    syncEveryMs: number;
    onAdaptersChanged: (tenantId: string) => void;
    /** Runs before a placement is asked for (this copy's demand report goes first). */
    beforePlacement?: () => Promise<void>;
  }) {
    this.db = options.db;
    this.bus = options.bus;
    this.placementQueue = options.placementQueue;
    this.logger = options.logger;
    this.syncEveryMs = options.syncEveryMs;
    this.onAdaptersChanged = options.onAdaptersChanged;
    this.beforePlacement = options.beforePlacement ?? (async () => {});
    this.policy = createPolicy(options.policy);
  }

  async start(): Promise<void> {
    this.unsubscribe = await this.bus.subscribe((event) => this.onEvent(event));
    await this.sync();
    const tick = () => {
      void this.sync()
        .catch((error) => this.logger.warn({ err: error }, "gateway fleet sync failed"))
        .finally(() => {
          if (this.timer !== null) {
            this.timer = setTimeout(tick, this.syncEveryMs);
          }
        });
    };
    this.timer = setTimeout(tick, this.syncEveryMs);
  }

  async stop(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.unsubscribe?.();
    for (const [, set] of this.waiters) {
      for (const w of set) {
        w.resolve({ kind: "timeout" });
      }
    }
    this.waiters.clear();
    await this.syncing?.catch(() => {});
    await this.nextSync?.catch(() => {});
  }

  /**
   * Re-reads replicas and placements. A call made while a read is under way gets the next read,
   * not that one: the change the caller heard of may have landed after it began. Calls made
   * meanwhile share that next read.
   */
  sync(): Promise<void> {
    if (this.syncing === null) {
      this.syncing = this.readFleet().finally(() => {
        this.syncing = null;
      });
      return this.syncing;
    }
    this.nextSync ??= this.syncing
      .catch(() => {})
      .then(() => {
        this.nextSync = null;
        return this.sync();
      });
    return this.nextSync;
  }

  private async readFleet(): Promise<void> {
    const snapshot = await loadFleetSnapshot(this.db);
    this.policy.sync(toFleetState(snapshot));
    this.replicas = new Map(snapshot.replicas.map((r) => [r.id, r]));
    const contextByBase = new Map<string, number>();
    for (const r of snapshot.replicas) {
      const length = r.liveState?.maxModelLen;
      if (typeof length === "number" && length > (contextByBase.get(r.baseModelId) ?? 0)) {
        contextByBase.set(r.baseModelId, length);
      }
    }
    this.contextByBase = contextByBase;
    const loadedOn = new Map<string, string[]>();
    for (const p of snapshot.placements) {
      if (p.state === "loaded") {
        loadedOn.set(p.adapterVersionId, [...(loadedOn.get(p.adapterVersionId) ?? []), p.replicaId]);
      }
    }
    this.loadedOn = loadedOn;
    const now = Date.now();
    for (const [key, at] of this.lost) {
      const [replicaId = "", versionId = ""] = key.split(" ");
      if (now - at > LOST_MARK_MS || !(loadedOn.get(versionId) ?? []).includes(replicaId)) {
        this.lost.delete(key);
      }
    }
    for (const known of [this.suspects, this.reported]) {
      for (const id of known.keys()) {
        if (!this.replicas.has(id)) {
          known.delete(id);
        }
      }
    }
    // Any re-read may make a waited-for adapter servable: loaded somewhere, or its replica
    // trusted again (a suspect seen good by the poller since), with no event to say so.
    this.settleServable();
  }

  /** Wakes the requests waiting for a version that some replica can now be sent. */
  private settleServable(): void {
    for (const versionId of [...this.waiters.keys()]) {
      this.settleIfServable(versionId);
    }
  }

  private settleIfServable(versionId: string): void {
    if (this.holders(versionId).length > 0) {
      this.settle(versionId, { kind: "loaded" });
    }
  }

  /**
   * Re-reads one version's placements: what a request waiting for its load needs, in one indexed
   * query instead of the whole fleet (which grows with every adapter, and which `sync()` re-reads
   * after, off the waiting request's path).
   */
  private async refreshVersion(versionId: string): Promise<void> {
    const rows = await listVersionPlacements(this.db, versionId);
    const loaded = rows.filter((r) => r.state === "loaded").map((r) => r.replicaId);
    if (loaded.length > 0) {
      this.loadedOn.set(versionId, loaded);
    } else {
      this.loadedOn.delete(versionId);
    }
    this.settleIfServable(versionId);
  }

  private serving(replica: ReplicaRow | undefined): replica is ReplicaRow {
    if (replica === undefined || !replicaIsUp(replica)) {
      return false;
    }
    const suspectSince = this.suspects.get(replica.id);
    if (suspectSince === undefined) {
      return true;
    }
    if ((replica.lastSeenAt?.getTime() ?? 0) > suspectSince) {
      this.suspects.delete(replica.id); // the fleet poller has had a good answer since
      return true;
    }
    return false;
  }

  /** Replicas that have the version registered and can be sent requests now. */
  private holders(versionId: string): string[] {
    return (this.loadedOn.get(versionId) ?? []).filter(
      // The lost map is empty but for restarts: no key is built per request otherwise.
      (id) =>
        this.serving(this.replicas.get(id)) && (this.lost.size === 0 || !this.lost.has(`${id} ${versionId}`)),
    );
  }

  private byLoad(ids: string[]): string[] {
    return [...ids].sort((a, b) => (this.inFlight.get(a) ?? 0) - (this.inFlight.get(b) ?? 0));
  }

  /** Replicas that have the version registered now, the policy's choice first. */
  routeAdapter(versionId: string, now = Date.now()): AdapterRoute {
    const holders = this.holders(versionId);
    const decision = this.policy.route({ adapterId: versionId }, now);
    if (!("replicaId" in decision)) {
      if (decision.reason === "unknown-adapter") {
        return { kind: "stale" };
      }
      if (holders.length > 0 && decision.reason === "slots-busy") {
        return { kind: "busy", detail: decision.detail };
      }
      return holders.length > 0 || decision.retryable
        ? { kind: "miss" }
        : { kind: "unavailable", detail: decision.detail };
    }
    if (holders.length === 0) {
      // The policy planned a load; the leader decides it. This request does not run here yet.
      return { kind: "miss" };
    }
    // The policy's choice runs the request only if this gateway can send it there.
    const counted = holders.includes(decision.replicaId);
    if (counted) {
      decision.admit();
    }
    const first = counted ? decision.replicaId : (this.byLoad(holders)[0] ?? "");
    const ordered = [first, ...this.byLoad(holders.filter((id) => id !== first))];
    const targets = ordered.map((id) => this.target(id, versionId));
    const completed = () =>
      this.policy.observe({ kind: "completed", adapterId: versionId, replicaId: decision.replicaId });
    return {
      kind: "hit",
      hold: this.hold(targets, counted ? decision.level : "registered", counted ? completed : null),
    };
  }

  /** Some replica has the version registered and can be sent requests for it now. */
  holdsAdapter(versionId: string): boolean {
    return this.holders(versionId).length > 0;
  }

  /** The policy's mirror of a replica's GPU slots and CPU cache, for the console (null if unknown). */
  shadow(replicaId: string): ReplicaShadow | null {
    return this.policy.shadow(replicaId);
  }

  /**
   * The longest sequence (prompt + completion) any replica of the base serves, as the replicas last
   * reported it (`max_model_len`); null before any did. What a request can cost is bounded by it.
   */
  contextTokens(baseModelId: string): number | null {
    return this.contextByBase.get(baseModelId) ?? null;
  }

  /** Healthy replicas of a base, least busy first. */
  routeBase(baseModelId: string): UpstreamTarget[] {
    const ids = [...this.replicas.values()]
      .filter((r) => r.baseModelId === baseModelId && this.serving(r) && !replicaIsDraining(r))
      .map((r) => r.id);
    return this.byLoad(ids).map((id) => this.target(id, null));
  }

  /** `routeBase`, held for one request: counted in flight on the first target until released. */
  holdBase(baseModelId: string): RouteHold {
    return this.hold(this.routeBase(baseModelId), null, null);
  }

  /** `admitted`: ends the request's count in the policy, when the policy's decision was admitted. */
  private hold(targets: UpstreamTarget[], level: CostLevel | null, admitted: (() => void) | null): RouteHold {
    const first = targets[0]?.replicaId ?? null;
    if (first !== null) {
      this.inFlight.set(first, (this.inFlight.get(first) ?? 0) + 1);
    }
    let released = false;
    return {
      targets,
      level,
      release: () => {
        if (released) {
          return;
        }
        released = true;
        if (first !== null) {
          this.inFlight.set(first, Math.max(0, (this.inFlight.get(first) ?? 1) - 1));
        }
        admitted?.();
      },
    };
  }

  private target(replicaId: string, loraName: string | null): UpstreamTarget {
    const replica = this.replicas.get(replicaId);
    return {
      replicaId,
      baseUrl: `${replica?.url ?? ""}/v1`,
      loraName,
      engine: ENGINE_DRIVERS[replica?.engine ?? "vllm"],
      baseModel: replica?.baseModelId ?? "",
    };
  }

  /**
   * A replica failed a request before its first byte. One that lost the adapter (it restarted) is
   * not asked for it again until the leader has dropped that placement; one that refused or failed
   * is not sent anything until the fleet poller has had a good answer from it since. Either way a
   * re-read of the fleet that still shows the old state does not send the next requests there.
   */
  markSuspect(replicaId: string, versionId: string | null, lostAdapter: boolean): void {
    if (lostAdapter && versionId !== null) {
      this.lost.set(`${replicaId} ${versionId}`, Date.now());
      return;
    }
    this.suspects.set(replicaId, Date.now());
  }

  /** Tells the scheduler leader, which checks the replica at once (see the `replica-failed` event). */
  reportFailure(
    replicaId: string,
    reason: "unreachable" | "timeout" | "server_error" | "lost_adapter",
    versionId: string | null,
  ): void {
    const now = Date.now();
    if (now - (this.reported.get(replicaId) ?? 0) < 1_000) {
      return;
    }
    this.reported.set(replicaId, now);
    void this.bus
      .publish({ type: "replica-failed", replicaId, reason, adapterVersionId: versionId })
      .catch((error) =>
        this.logger.warn({ err: error, replica_id: replicaId }, "replica failure not reported"),
      );
  }

  /** Asks the leader to place the version (once across every gateway: the job id dedupes), without waiting. */
  /** `priority`: the queue's order between tenants (see `fairPriority`); re-asks keep the first one's. */
  async requestPlacement(versionId: string, priority?: number): Promise<void> {
    await this.beforePlacement().catch((error) => this.logger.warn({ err: error }, "demand not reported"));
    const data: PlacementRequest = { adapterVersionId: versionId };
    await this.placementQueue.add(PLACEMENT_JOB, data, {
      jobId: placementJobId(versionId),
      priority: priority ?? this.placementPriority.get(versionId) ?? 1,
    });
  }

  /** This process already waits for the version to load (a request for it now starts no load). */
  isWaiting(versionId: string): boolean {
    return this.waiters.has(versionId);
  }

  /**
   * Waits until the version is loaded somewhere, asking the leader to place it. Concurrent misses in
   * this process share one wait; across processes the job id makes them one placement.
   */
  async waitForPlacement(versionId: string, timeoutMs: number, priority = 1): Promise<PlacementWait> {
    let set = this.waiters.get(versionId);
    const first = !set;
    if (!set) {
      set = new Set();
      this.waiters.set(versionId, set);
      this.placementPriority.set(versionId, priority);
    }
    const waiters = set;
    const result = new Promise<PlacementWait>((resolve) => {
      const waiter: Waiter = {
        resolve: (r) => {
          clearTimeout(timer);
          waiters.delete(waiter);
          if (waiters.size === 0 && this.waiters.get(versionId) === waiters) {
            this.waiters.delete(versionId);
            this.placementPriority.delete(versionId);
          }
          resolve(r);
        },
      };
      const timer = setTimeout(() => waiter.resolve({ kind: "timeout" }), timeoutMs);
      waiters.add(waiter);
    });
    if (first) {
      await this.requestPlacement(versionId, priority);
      // It may have been loaded between our miss and the subscription-backed wait.
      await this.refreshVersion(versionId);
    }
    return result;
  }

  private askAgainForWaited(): void {
    for (const versionId of this.waiters.keys()) {
      if (this.holders(versionId).length === 0) {
        this.askAgain(versionId);
      }
    }
  }

  private askAgain(versionId: string): void {
    void this.requestPlacement(versionId).catch((error) =>
      this.logger.warn({ err: error, version_id: versionId }, "placement request not sent"),
    );
  }

  private settle(versionId: string, result: PlacementWait): void {
    for (const waiter of [...(this.waiters.get(versionId) ?? [])]) {
      waiter.resolve(result);
    }
  }

  private onEvent(event: FleetEvent): void {
    if (
      event.type === "tenant-changed" ||
      event.type === "base-models-changed" ||
      event.type === "replica-failed"
    ) {
      return;
    }
    if (event.type === "adapters-changed") {
      this.onAdaptersChanged(event.tenantId);
    }
    const warn = (error: unknown) => this.logger.warn({ err: error }, "gateway fleet sync failed");
    if (event.type === "placement" && this.waiters.has(event.adapterVersionId)) {
      // Requests wait for this one: its rows first, the whole fleet after.
      void this.onWaitedPlacement(event)
        .catch(warn)
        .finally(() => void this.sync().catch(warn));
      return;
    }
    void this.sync()
      .then(() => {
        if (event.type === "fleet-changed") {
          this.askAgainForWaited();
        }
      })
      .catch(warn);
  }

  private async onWaitedPlacement(event: Extract<FleetEvent, { type: "placement" }>): Promise<void> {
    const versionId = event.adapterVersionId;
    await this.refreshVersion(versionId);
    if (!this.waiters.has(versionId) || this.holders(versionId).length > 0) {
      return; // settled by the refresh
    }
    if (event.state === "failed") {
      this.settle(versionId, { kind: "failed", message: event.message ?? "the load failed" });
    } else if (event.state === "unloaded") {
      // Dropped from the replica a waiting request could not reach (it went down): the leader
      // is asked again and places it where it can be served. Not on `loaded` or `present`: the
      // leader would answer "already placed" with another `present`, back and forth.
      this.askAgain(versionId);
    }
  }
}
