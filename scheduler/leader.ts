import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Worker } from "bullmq";
import { LeaderContext, type SchedulerDeps, type SchedulerOptions } from "./context.ts";
import { DemandIntake } from "./demand-reports.ts";
import { FleetPoller } from "./fleet-poller.ts";
import { LeaderElection } from "./lease.ts";
import { createPolicy, type ReplicaShadow } from "./policy/index.ts";
import { checkReported, reconcile } from "./reconcile.ts";
import { BullReplicaQueues, startPlacementWorker } from "./worker.ts";

export type { SchedulerDeps, SchedulerOptions } from "./context.ts";

/**
 * The scheduler process. Every instance competes for the lease; the leader alone places adapters
 * (misses from gateways), runs one load/unload at a time per replica through its agent, polls the
 * fleet and reconciles placements with what replicas really have registered.
 */
export class SchedulerService {
  readonly holder = `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  private readonly election: LeaderElection;
  private readonly deps: SchedulerDeps;
  private readonly options: SchedulerOptions;
  private term: LeaderTerm | null = null;
  private termStopped: Promise<void> = Promise.resolve();

  constructor(deps: SchedulerDeps, options: SchedulerOptions) {
    this.deps = deps;
    this.options = options;
    this.election = new LeaderElection(
      deps.db,
      deps.logger,
      {
        name: "scheduler",
        holder: this.holder,
        ttlMs: options.leaseTtlMs,
        renewEveryMs: options.leaseTtlMs / 3,
      },
      { onElected: () => this.becomeLeader(), onDemoted: () => void this.stepDown() },
    );
  }

  get isLeader(): boolean {
    return this.election.isLeader;
  }

  /** The leader's mirror of a replica (registered, slots, requests in flight); null when not leading. */
  shadow(replicaId: string): ReplicaShadow | null {
    return this.term?.shadow(replicaId) ?? null;
  }

  /** The leader's decayed share of its base's traffic for an adapter version; 0 when not leading. */
  demandShare(adapterId: string): number {
    return this.term?.demandShare(adapterId) ?? 0;
  }

  /** Tries to take or renew the leader lease so far (see LeaderElection.attempts). */
  get leaseAttempts(): number {
    return this.election.attempts;
  }

  start(): void {
    this.election.start();
  }

  async stop(): Promise<void> {
    await this.election.stop();
    await this.stepDown();
  }

  private becomeLeader(): void {
    this.term = new LeaderTerm(this.deps, this.options);
    void this.term
      .start()
      .then(() => this.deps.logger.info({ holder: this.holder }, "scheduler leader started"))
      .catch((error) => this.deps.logger.error({ err: error }, "leader start failed"));
  }

  /**
   * Stops the term, if any; a call while a term is stopping (the lease's demotion during stop())
   * waits for that stop too, so stop() returns once the term's work is over.
   */
  private stepDown(): Promise<void> {
    const term = this.term;
    this.term = null;
    if (term !== null) {
      this.termStopped = term.stop();
    }
    return this.termStopped;
  }
}

/**
 * One leadership term: a fresh policy, the fleet poller, the placement worker, the replicas' job
 * queues, and the reconcile loop, all sharing one `LeaderContext`; everything stops with the term.
 */
class LeaderTerm {
  private readonly ctx: LeaderContext;
  private placementWorker: Worker | null = null;
  private reconcileTimer: NodeJS.Timeout | null = null;
  /** The reconcile under way, if any: stop() waits for it before its connections close. */
  private reconciling: Promise<void> | null = null;
  private unsubscribe: (() => void) | null = null;
  private stopped = false;
  private readonly demand: DemandIntake;

  constructor(deps: SchedulerDeps, options: SchedulerOptions) {
    const poller = new FleetPoller(deps.db, deps.logger, {
      ...options.poll,
      ...(options.replicaApiKey !== undefined && { replicaApiKey: options.replicaApiKey }),
      onHealthChange: () => {
        this.ctx.markStale();
        void deps.bus
          .publish({ type: "fleet-changed" })
          .catch((error) => deps.logger.warn({ err: error }, "fleet change not published"));
      },
    });
    const queues = new BullReplicaQueues(deps.redis, deps.logger, () => this.ctx);
    this.ctx = new LeaderContext({
      deps,
      options,
      policy: createPolicy(options.policy, options.policyConfig),
      poller,
      queues,
    });
    this.demand = new DemandIntake({ redis: deps.redis, logger: deps.logger, policy: () => this.ctx.policy });
    this.ctx.drainDemand = () => this.demand.drain();
  }

  async start(): Promise<void> {
    const { ctx } = this;
    const { logger, bus } = ctx.deps;
    await ctx.poller.pollOnce().catch((error) => logger.warn({ err: error }, "first fleet poll failed"));
    ctx.poller.start();
    this.unsubscribe = await bus.subscribe((event) => {
      // Replicas registered, drained or pinned through the API, adapters deleted or failed.
      if (event.type === "fleet-changed" || event.type === "adapters-changed") {
        ctx.markStale();
      }
      if (event.type === "replica-failed" && !this.stopped) {
        void checkReported(ctx, event).catch((error) =>
          logger.warn({ err: error, replica_id: event.replicaId }, "reported replica not checked"),
        );
      }
    });
    await ctx.sync();
    // Every request the gateways serve, hits included, reaches the policy from here.
    this.demand.start();
    this.placementWorker = startPlacementWorker(ctx);
    const tick = () => {
      this.reconciling = reconcile(ctx)
        .catch((error) => logger.error({ err: error }, "reconcile failed"))
        .finally(() => {
          this.reconciling = null;
          if (!this.stopped) {
            this.reconcileTimer = setTimeout(tick, ctx.options.reconcileEveryMs);
          }
        });
    };
    this.reconcileTimer = setTimeout(tick, ctx.options.reconcileEveryMs);
  }

  shadow(replicaId: string): ReplicaShadow | null {
    return this.ctx.policy.shadow(replicaId);
  }

  demandShare(adapterId: string): number {
    return this.ctx.policy.demandShare(adapterId);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    if (this.reconcileTimer) {
      clearTimeout(this.reconcileTimer);
    }
    // Bounded by the replica calls' timeout; the caller closes Postgres and Redis after this.
    await this.reconciling;
    await this.demand.stop();
    await this.ctx.poller.stop();
    await this.placementWorker?.close();
    await this.ctx.queues.close();
    await this.ctx.close();
  }
}
