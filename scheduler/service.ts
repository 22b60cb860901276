import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { type Job, Queue, UnrecoverableError, Worker } from "bullmq";
import { AgentClient } from "../adapters/agent/index.ts";
import type { Database } from "../db/client.ts";
import { getVersionForScheduler, markVersionFailed } from "../db/queries/adapters.ts";
import { loadFleetSnapshot } from "../db/queries/fleet.ts";
import {
  deletePlacement,
  listReplicaPlacements,
  setPlacementState,
  upsertPlacement,
} from "../db/queries/placements.ts";
import { getReplica, markReplicaDown, replicaIsUp } from "../db/queries/replicas.ts";
import { getTenant } from "../db/queries/tenants.ts";
import { vllm } from "../engines/index.ts";
import type { Config } from "../lib/env.ts";
import type { Logger } from "../lib/logger.ts";
import { bullPrefix, createRedis } from "../lib/redis.ts";
import type { EventBus, FleetEvent } from "./events.ts";
import { fairPriority } from "./fair-queue.ts";
import { FleetPoller } from "./fleet-poller.ts";
import { toFleetState } from "./fleet-state.ts";
import { LeaderElection } from "./lease.ts";
import {
  type Action,
  createPolicy,
  type Policy,
  type PolicyConfig,
  type PolicyKind,
} from "./policy/index.ts";
import {
  type LoadJob,
  loadJobId,
  PLACEMENT_QUEUE,
  type PlacementRequest,
  replicaOpJobOptions,
  replicaOpsQueue,
  type UnloadJob,
  unloadJobId,
} from "./queues.ts";

export interface SchedulerOptions {
  policy: PolicyKind;
  policyConfig?: PolicyConfig;
  agentToken: string;
  replicaApiKey?: string;
  leaseTtlMs: number;
  reconcileEveryMs: number;
  poll: { intervalMs: number; downAfterMs: number; timeoutMs: number };
  agentTimeoutMs: number;
}

export interface SchedulerDeps {
  db: Database;
  redis: Config["redis"];
  logger: Logger;
  bus: EventBus;
}

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
  private policy: Policy;
  private lastSync = 0;
  private leaderWork: LeaderWork | null = null;

  constructor(deps: SchedulerDeps, options: SchedulerOptions) {
    this.deps = deps;
    this.options = options;
    this.policy = createPolicy(options.policy, options.policyConfig);
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

  start(): void {
    this.election.start();
  }

  async stop(): Promise<void> {
    await this.election.stop();
    await this.stepDown();
  }

  /** Re-reads the fleet into the policy (at most every `minIntervalMs`). */
  async sync(minIntervalMs = 0): Promise<void> {
    if (Date.now() - this.lastSync < minIntervalMs) {
      return;
    }
    this.policy.sync(toFleetState(await loadFleetSnapshot(this.deps.db)));
    this.lastSync = Date.now();
  }

  private becomeLeader(): void {
    this.policy = createPolicy(this.options.policy, this.options.policyConfig);
    this.lastSync = 0;
    this.leaderWork = new LeaderWork(this);
    void this.leaderWork
      .start()
      .catch((error) => this.deps.logger.error({ err: error }, "leader start failed"));
  }

  private async stepDown(): Promise<void> {
    const work = this.leaderWork;
    this.leaderWork = null;
    await work?.stop();
  }

  /** @internal for LeaderWork */
  get internals() {
    return { deps: this.deps, options: this.options, policy: this.policy };
  }
}

class LeaderWork {
  private readonly service: SchedulerService;
  private placementWorker: Worker | null = null;
  private readonly opWorkers = new Map<string, Worker>();
  private readonly opQueues = new Map<string, Queue>();
  private readonly agents = new Map<string, AgentClient>();
  private readonly replicaClients = new Map<string, vllm.ReplicaClient>();
  private poller: FleetPoller | null = null;
  private reconcileTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  private unsubscribe: (() => void) | null = null;
  /**
   * Loads waiting in each replica's queue, per tenant (key `<replica> <tenant>`): a tenant's next load
   * is queued behind other tenants' earlier ones in proportion (fairPriority), not behind all of its
   * own flood. In memory: a new leader starts everyone's counts afresh.
   */
  private readonly waitingLoads = new Map<string, number>();
  /** Replicas a gateway reported, being checked now: one check at a time each. */
  private readonly checking = new Set<string>();
  /**
   * Placement decisions, fleet re-reads and the writes that commit a load or unload take turns.
   * A snapshot read while a decision was being written would otherwise be applied over it: the
   * policy would forget a load it had just started, and with it that the adapter is hot, so a
   * drain would unload that adapter instead of moving it.
   */
  private turn: Promise<unknown> = Promise.resolve();

  constructor(service: SchedulerService) {
    this.service = service;
  }

  private get deps() {
    return this.service.internals.deps;
  }
  private get options() {
    return this.service.internals.options;
  }
  private get policy() {
    return this.service.internals.policy;
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.turn.then(work, work);
    this.turn = run.catch(() => {});
    return run;
  }

  async start(): Promise<void> {
    const { db, logger } = this.deps;
    this.poller = new FleetPoller(db, logger, {
      ...this.options.poll,
      ...(this.options.replicaApiKey !== undefined && { replicaApiKey: this.options.replicaApiKey }),
      onHealthChange: () => {
        void this.deps.bus
          .publish({ type: "fleet-changed" })
          .catch((error) => logger.warn({ err: error }, "fleet change not published"));
      },
    });
    await this.poller.pollOnce().catch((error) => logger.warn({ err: error }, "first fleet poll failed"));
    this.poller.start();
    this.unsubscribe = await this.deps.bus.subscribe((event) => {
      if (event.type === "replica-failed" && !this.stopped) {
        void this.checkReported(event).catch((error) =>
          logger.warn({ err: error, replica_id: event.replicaId }, "reported replica not checked"),
        );
      }
    });
    await this.service.sync();
    this.placementWorker = new Worker(PLACEMENT_QUEUE, (job) => this.exclusive(() => this.place(job)), {
      connection: createRedis(this.deps.redis, "worker"),
      prefix: bullPrefix(this.deps.redis),
      concurrency: 1,
    });
    this.placementWorker.on("error", (error) => logger.error({ err: error }, "placement worker error"));
    const tick = () => {
      void this.reconcile()
        .catch((error) => logger.error({ err: error }, "reconcile failed"))
        .finally(() => {
          if (!this.stopped) {
            this.reconcileTimer = setTimeout(tick, this.options.reconcileEveryMs);
          }
        });
    };
    this.reconcileTimer = setTimeout(tick, this.options.reconcileEveryMs);
    logger.info({ holder: this.service.holder }, "scheduler leader started");
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    if (this.reconcileTimer) {
      clearTimeout(this.reconcileTimer);
    }
    await this.poller?.stop();
    await this.placementWorker?.close();
    await Promise.all([...this.opWorkers.values()].map((w) => w.close()));
    await Promise.all([...this.opQueues.values()].map((q) => q.close()));
    await Promise.all([...this.agents.values()].map((a) => a.close()));
    await Promise.all([...this.replicaClients.values()].map((c) => c.close()));
  }

  /**
   * A gateway's request failed at this replica before its first byte. The leader polls it at once:
   * if the gateway could not reach it and the poll cannot either, it is down now rather than after
   * the poller's grace; if it answers without the adapter the gateway asked for, that placement is
   * dropped now rather than at the next reconcile. Either way gateways hear of it (fleet-changed,
   * unloaded), and the requests waiting on that adapter get it loaded elsewhere.
   */
  private async checkReported(report: Extract<FleetEvent, { type: "replica-failed" }>): Promise<void> {
    const { replicaId, adapterVersionId } = report;
    if (this.checking.has(replicaId) || this.poller === null) {
      return;
    }
    this.checking.add(replicaId);
    try {
      const { db, bus, logger } = this.deps;
      const replica = await getReplica(db, replicaId);
      if (!replica || replica.status === "down") {
        return;
      }
      // Read before the poll: a placement loaded by then is registered by then, unless it was lost.
      const heldBefore = (await listReplicaPlacements(db, replicaId)).some(
        (p) => p.adapterVersionId === adapterVersionId && p.state === "loaded",
      );
      const outcome = await this.poller.pollNow(replica);
      if (!outcome.ok && report.reason === "unreachable") {
        // Refused by the gateway and by us: not a slow replica (a timeout or a 5xx keeps the grace).
        if (await markReplicaDown(db, replicaId, new Date())) {
          logger.warn(
            { replica_id: replicaId, error: outcome.error },
            "replica marked down: a gateway reported it failing and it does not answer",
          );
          await bus.publish({ type: "fleet-changed" });
          const placed = await listReplicaPlacements(db, replicaId);
          await this.dropPlacements(
            replicaId,
            placed.map((p) => p.adapterVersionId),
          );
        }
        return;
      }
      if (
        outcome.ok &&
        heldBefore &&
        adapterVersionId !== null &&
        !outcome.registered?.includes(adapterVersionId)
      ) {
        await this.dropPlacements(replicaId, [adapterVersionId]);
      }
    } finally {
      this.checking.delete(replicaId);
    }
  }

  /** Drops these placements of the replica, re-reads the fleet, and tells the gateways (`unloaded`). */
  private async dropPlacements(replicaId: string, adapterVersionIds: readonly string[]): Promise<void> {
    if (adapterVersionIds.length === 0) {
      return;
    }
    const { db, bus } = this.deps;
    await this.exclusive(async () => {
      for (const adapterVersionId of adapterVersionIds) {
        await deletePlacement(db, { replicaId, adapterVersionId });
      }
      await this.service.sync();
    });
    for (const adapterVersionId of adapterVersionIds) {
      await bus.publish({ type: "placement", adapterVersionId, replicaId, state: "unloaded" });
    }
  }

  /** A gateway missed: decide where the adapter goes (evicting if needed) and queue the work. */
  private async place(job: Job<PlacementRequest>): Promise<string> {
    const { adapterVersionId } = job.data;
    await this.service.sync(250);
    let result = this.policy.route({ adapterId: adapterVersionId }, Date.now());
    if (!("replicaId" in result) && result.reason === "unknown-adapter") {
      // Uploaded after our last read of the fleet.
      await this.service.sync();
      result = this.policy.route({ adapterId: adapterVersionId }, Date.now());
    }
    if (!("replicaId" in result)) {
      if (result.retryable) {
        // Capacity frees up as requests finish: the job retries with backoff; waiters keep waiting.
        throw new Error(result.detail);
      }
      await this.deps.bus.publish({
        type: "placement",
        adapterVersionId,
        replicaId: "",
        state: "failed",
        message: result.detail,
      });
      return `refused: ${result.reason}`;
    }
    // The leader places but never serves (the decision is not admitted): requests run on gateways.
    if (result.actions.length === 0) {
      // Already placed or loading: a gateway that missed it was stale; wake it.
      await this.deps.bus.publish({
        type: "placement",
        adapterVersionId,
        replicaId: result.replicaId,
        state: "loaded",
      });
      return "already placed";
    }
    await this.enqueue(result.actions);
    return result.actions
      .map((a) => (a.kind === "drained" ? a.kind : `${a.kind} ${a.adapterId} on ${a.replicaId}`))
      .join("; ");
  }

  private async enqueue(actions: readonly Action[]): Promise<void> {
    const { db } = this.deps;
    for (const action of actions) {
      if (action.kind === "drained") {
        this.deps.logger.info(
          { replica_id: action.replicaId },
          "replica drained: it holds nothing and may leave",
        );
        continue;
      }
      const queue = await this.ensureReplicaQueue(action.replicaId);
      if (action.kind === "load") {
        const version = await getVersionForScheduler(db, action.adapterId);
        if (!version) {
          continue;
        }
        await upsertPlacement(db, {
          tenantId: version.tenantId,
          replicaId: action.replicaId,
          adapterVersionId: action.adapterId,
          loraName: action.adapterId,
          state: "loading",
        });
        const data: LoadJob = {
          replicaId: action.replicaId,
          adapterVersionId: action.adapterId,
          tenantId: version.tenantId,
        };
        const waitingKey = `${action.replicaId} ${version.tenantId}`;
        const waiting = this.waitingLoads.get(waitingKey) ?? 0;
        const tenant = await getTenant(db, version.tenantId);
        await queue.add("adapter.load", data, {
          jobId: loadJobId(data),
          priority: fairPriority(waiting, tenant?.priority ?? null),
        });
        this.waitingLoads.set(waitingKey, waiting + 1);
      } else {
        const data: UnloadJob = {
          replicaId: action.replicaId,
          adapterVersionId: action.adapterId,
          loraName: action.adapterId,
        };
        await setPlacementState(db, {
          replicaId: action.replicaId,
          adapterVersionId: action.adapterId,
          state: "unloading",
        });
        await queue.add("adapter.unload", data, { jobId: unloadJobId(data) });
      }
    }
  }

  private async ensureReplicaQueue(replicaId: string): Promise<Queue> {
    let queue = this.opQueues.get(replicaId);
    if (!queue) {
      const name = replicaOpsQueue(replicaId);
      const connection = {
        connection: createRedis(this.deps.redis, "producer"),
        prefix: bullPrefix(this.deps.redis),
      };
      queue = new Queue(name, { ...connection, defaultJobOptions: replicaOpJobOptions });
      this.opQueues.set(replicaId, queue);
      const worker = new Worker(name, (job) => this.runOp(job), {
        connection: createRedis(this.deps.redis, "worker"),
        prefix: bullPrefix(this.deps.redis),
        // One operation at a time per replica: a load pauses every stream on it.
        concurrency: 1,
      });
      worker.on("error", (error) =>
        this.deps.logger.error({ err: error, replica_id: replicaId }, "op worker error"),
      );
      worker.on("failed", (job, error) => void this.onOpFailed(job, error));
      this.opWorkers.set(replicaId, worker);
    }
    return queue;
  }

  private agentFor(url: string): AgentClient {
    let agent = this.agents.get(url);
    if (!agent) {
      agent = new AgentClient({
        baseUrl: url,
        token: this.options.agentToken,
        timeoutMs: this.options.agentTimeoutMs,
      });
      this.agents.set(url, agent);
    }
    return agent;
  }

  private async runOp(job: Job<LoadJob | UnloadJob>): Promise<string> {
    const { db, bus, logger } = this.deps;
    const tenantId = (job.data as LoadJob).tenantId;
    if (job.name === "adapter.load" && job.attemptsMade === 0 && tenantId !== undefined) {
      // No longer waiting: the tenant's next load queues a step earlier.
      const key = `${job.data.replicaId} ${tenantId}`;
      const left = (this.waitingLoads.get(key) ?? 1) - 1;
      if (left <= 0) {
        this.waitingLoads.delete(key);
      } else {
        this.waitingLoads.set(key, left);
      }
    }
    const replica = await getReplica(db, job.data.replicaId);
    if (!replica) {
      throw new UnrecoverableError(`replica ${job.data.replicaId} is gone`);
    }
    if (!replica.agentUrl) {
      throw new UnrecoverableError(
        `replica ${replica.id} has no agent_url: loraplane loads adapters through the agent`,
      );
    }
    const agent = this.agentFor(replica.agentUrl);
    const { adapterVersionId } = job.data;
    if (job.name === "adapter.unload") {
      const result = await agent.unload((job.data as UnloadJob).loraName);
      if (result.kind === "transient" && result.code !== "not_found") {
        throw new Error(`${result.code}: ${result.message}`);
      }
      await this.exclusive(() => deletePlacement(db, { replicaId: replica.id, adapterVersionId }));
      await bus.publish({ type: "placement", adapterVersionId, replicaId: replica.id, state: "unloaded" });
      return "unloaded";
    }
    const version = await getVersionForScheduler(db, adapterVersionId);
    if (version?.status !== "ready") {
      await this.exclusive(() => deletePlacement(db, { replicaId: replica.id, adapterVersionId }));
      throw new UnrecoverableError(`version ${adapterVersionId} is no longer ready`);
    }
    const started = Date.now();
    const result = await agent.load({
      loraName: adapterVersionId,
      objectKey: version.objectKey,
      configObjectKey: version.configObjectKey,
      sha256: version.sha256,
      sizeBytes: version.sizeBytes,
    });
    if (result.kind === "permanent") {
      await this.exclusive(async () => {
        await markVersionFailed(db, adapterVersionId);
        await deletePlacement(db, { replicaId: replica.id, adapterVersionId });
        this.policy.observe({
          kind: "loaded",
          adapterId: adapterVersionId,
          replicaId: replica.id,
          ok: false,
        });
      });
      await bus.publish({
        type: "placement",
        adapterVersionId,
        replicaId: replica.id,
        state: "failed",
        message: `${result.code}: ${result.message}`,
      });
      await bus.publish({ type: "adapters-changed", tenantId: version.tenantId });
      throw new UnrecoverableError(`${result.code}: ${result.message}`);
    }
    if (result.kind === "transient") {
      throw new Error(`${result.code}: ${result.message}`);
    }
    await this.exclusive(async () => {
      await setPlacementState(db, {
        replicaId: replica.id,
        adapterVersionId,
        state: "loaded",
        lastError: null,
      });
      this.policy.observe({ kind: "loaded", adapterId: adapterVersionId, replicaId: replica.id, ok: true });
    });
    await bus.publish({ type: "placement", adapterVersionId, replicaId: replica.id, state: "loaded" });
    logger.info(
      { adapter_version_id: adapterVersionId, replica_id: replica.id, ms: Date.now() - started },
      "adapter loaded",
    );
    return "loaded";
  }

  /** Out of retries: the placement is dropped so that the next miss tries afresh (maybe elsewhere). */
  private async onOpFailed(job: Job<LoadJob | UnloadJob> | undefined, error: Error): Promise<void> {
    if (job?.name !== "adapter.load") {
      return;
    }
    const final = job.attemptsMade >= (job.opts.attempts ?? 1) || error instanceof UnrecoverableError;
    if (!final) {
      return;
    }
    const { replicaId, adapterVersionId } = job.data;
    await this.exclusive(() => deletePlacement(this.deps.db, { replicaId, adapterVersionId })).catch(
      () => {},
    );
    await this.deps.bus
      .publish({ type: "placement", adapterVersionId, replicaId, state: "failed", message: error.message })
      .catch(() => {});
  }

  private replicaClientFor(url: string): vllm.ReplicaClient {
    let client = this.replicaClients.get(url);
    if (!client) {
      client = vllm.createReplicaClient({
        baseUrl: url,
        timeoutMs: this.options.poll.timeoutMs,
        ...(this.options.replicaApiKey !== undefined && { apiKey: this.options.replicaApiKey }),
      });
      this.replicaClients.set(url, client);
    }
    return client;
  }

  /**
   * Repairs drift between placements and replicas: a replica that restarted lost its adapters, one
   * that is down holds nothing we can use, and a name registered that we did not place is unloaded.
   * Then runs the policy's background plan (pins, replication of hot adapters, draining moves).
   */
  async reconcile(): Promise<void> {
    const { db, logger } = this.deps;
    const snapshot = await loadFleetSnapshot(db);
    const routable = new Set(snapshot.versions.map((v) => v.versionId));
    for (const p of snapshot.placements) {
      // A deleted adapter (or a failed version) is unloaded; its objects go once no replica holds it.
      if (!routable.has(p.adapterVersionId) && p.state !== "unloading") {
        const queue = await this.ensureReplicaQueue(p.replicaId);
        await setPlacementState(db, {
          replicaId: p.replicaId,
          adapterVersionId: p.adapterVersionId,
          state: "unloading",
        });
        const data: UnloadJob = {
          replicaId: p.replicaId,
          adapterVersionId: p.adapterVersionId,
          loraName: p.loraName,
        };
        await queue.add("adapter.unload", data, { jobId: unloadJobId(data) });
      }
    }
    for (const replica of snapshot.replicas) {
      const placed = snapshot.placements.filter((p) => p.replicaId === replica.id);
      if (replica.status === "down") {
        await this.dropPlacements(
          replica.id,
          placed.map((p) => p.adapterVersionId),
        );
        continue;
      }
      if (!replicaIsUp(replica)) {
        continue;
      }
      const models = await this.replicaClientFor(replica.url).listModels();
      if (models.kind !== "ok") {
        continue;
      }
      const registered = new Set(models.value.adapters.map((a) => a.id));
      const lost = placed.filter((p) => p.state === "loaded" && !registered.has(p.loraName));
      for (const p of lost) {
        logger.warn(
          { replica_id: replica.id, lora: p.loraName },
          "replica lost an adapter (restart?): placement dropped",
        );
      }
      await this.dropPlacements(
        replica.id,
        lost.map((p) => p.adapterVersionId),
      );
      const known = new Set(placed.map((p) => p.loraName));
      for (const name of registered) {
        if (!known.has(name) && replica.agentUrl) {
          logger.warn(
            { replica_id: replica.id, lora: name },
            "adapter registered that loraplane did not place: unloading",
          );
          const queue = await this.ensureReplicaQueue(replica.id);
          const data: UnloadJob = { replicaId: replica.id, adapterVersionId: name, loraName: name };
          await queue.add("adapter.unload", data, { jobId: unloadJobId(data) });
        }
      }
    }
    await this.exclusive(async () => {
      await this.service.sync(1_000); // a drop above has re-read the fleet already
      const planned = this.policy.plan(Date.now());
      if (planned.length > 0) {
        await this.enqueue(planned);
      }
    });
  }
}
