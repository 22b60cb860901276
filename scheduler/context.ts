import type { Job, JobsOptions } from "bullmq";
import { AgentClient } from "../adapters/index.ts";
import type { Database } from "../db/index.ts";
import { loadFleetSnapshot, placementState } from "../db/index.ts";
import { ENGINE_DRIVERS, type EngineName, type ReplicaClient } from "../engines/index.ts";
import type { Config, Logger } from "../lib/index.ts";
import type { EventBus } from "./events.ts";
import type { FleetPoller } from "./fleet-poller.ts";
import { toFleetState } from "./fleet-state.ts";
import type { Policy, PolicyConfig, PolicyKind } from "./policy/index.ts";

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

/** Each replica's queue of loads and unloads, worked one job at a time (see worker.ts). */
export interface ReplicaQueues {
  add(replicaId: string, job: { name: string; data: object; opts?: JobsOptions }): Promise<Job>;
  /** Whether a job with this id is in the replica's queue (waiting, delayed or running). */
  holds(replicaId: string, jobId: string): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * What one leadership term works with: the policy (fresh each term), the fleet poller, the replicas'
 * job queues and clients, and the exclusive turn. Built by the leader (leader.ts) and handed to the
 * jobs (jobs/), the reconcile loop (reconcile.ts) and the actions that commit decisions (actions.ts).
 */
export class LeaderContext {
  readonly deps: SchedulerDeps;
  readonly options: SchedulerOptions;
  /** Applies the gateways' demand reports that arrived so far (set by the term once it reads them). */
  drainDemand: () => Promise<unknown> = async () => {};
  readonly policy: Policy;
  readonly poller: FleetPoller;
  readonly queues: ReplicaQueues;
  /**
   * Loads waiting in each replica's queue, per tenant (key `<replica> <tenant>`): a tenant's next load
   * is queued behind other tenants' earlier ones in proportion (fairPriority), not behind all of its
   * own flood. In memory: a new leader starts everyone's counts afresh.
   */
  readonly waitingLoads = new Map<string, number>();
  /** Replicas a gateway reported, being checked now: one check at a time each. */
  readonly checking = new Set<string>();
  private readonly agents = new Map<string, AgentClient>();
  private readonly replicaClients = new Map<string, ReplicaClient>();
  private lastSync = 0;
  /**
   * Something changed in Postgres that this policy did not do itself: a replica's health, the
   * fleet or an adapter changed through the API, or a load or unload failed outside the policy's
   * own bookkeeping. The next placement re-reads the fleet first; otherwise the policy, which
   * records its own decisions and their loads as it makes them, is current without a read.
   */
  private stale = true;
  /**
   * Placement decisions, fleet re-reads and the writes that commit a load or unload take turns.
   * A snapshot read while a decision was being written would otherwise be applied over it: the
   * policy would forget a load it had just started, and with it that the adapter is hot, so a
   * drain would unload that adapter instead of moving it.
   */
  private turn: Promise<unknown> = Promise.resolve();

  constructor(parts: {
    deps: SchedulerDeps;
    options: SchedulerOptions;
    policy: Policy;
    poller: FleetPoller;
    queues: ReplicaQueues;
  }) {
    this.deps = parts.deps;
    this.options = parts.options;
    this.policy = parts.policy;
    this.poller = parts.poller;
    this.queues = parts.queues;
  }

  /** Runs `work` when every earlier turn is over (whether it succeeded or not). */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.turn.then(work, work);
    this.turn = run.catch(() => {});
    return run;
  }

  /** Re-reads the fleet into the policy (at most every `minIntervalMs`). */
  async sync(minIntervalMs = 0): Promise<void> {
    if (Date.now() - this.lastSync < minIntervalMs) {
      return;
    }
    // Cleared before the read: a change marked while it runs may not be in it, so it marks again.
    this.stale = false;
    try {
      this.policy.sync(toFleetState(await loadFleetSnapshot(this.deps.db)));
    } catch (error) {
      this.stale = true;
      throw error;
    }
    this.lastSync = Date.now();
  }

  /** Whether a placement row backs what the policy counts: the version loading or loaded there. */
  async placedAsBelieved(adapterVersionId: string, replicaId: string): Promise<boolean> {
    const state = await placementState(this.deps.db, { replicaId, adapterVersionId });
    return state === "loading" || state === "loaded";
  }

  /** See `stale`: the fleet changed behind the policy's back. */
  markStale(): void {
    this.stale = true;
  }

  /** Re-reads the fleet only if it changed behind the policy's back since the last read. */
  async syncIfStale(): Promise<void> {
    if (this.stale) {
      await this.sync();
    }
  }

  /** The client of the agent at `url` (one keep-alive pool each). */
  agentFor(url: string): AgentClient {
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

  /** The client of a replica, in its engine's protocol, for its model list. */
  replicaClientFor(replica: { url: string; engine: EngineName }): ReplicaClient {
    const key = `${replica.engine} ${replica.url}`;
    let client = this.replicaClients.get(key);
    if (!client) {
      client = ENGINE_DRIVERS[replica.engine].createReplicaClient({
        baseUrl: replica.url,
        timeoutMs: this.options.poll.timeoutMs,
        ...(this.options.replicaApiKey !== undefined && { apiKey: this.options.replicaApiKey }),
      });
      this.replicaClients.set(key, client);
    }
    return client;
  }

  async close(): Promise<void> {
    await Promise.all([...this.agents.values()].map((a) => a.close()));
    await Promise.all([...this.replicaClients.values()].map((c) => c.close()));
  }
}
