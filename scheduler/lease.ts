import type { Database } from "../db/index.ts";
import { acquireLease, releaseLease } from "../db/index.ts";
import type { Logger } from "../lib/index.ts";

export interface LeaderOptions {
  name: string;
  holder: string;
  /** A holder that stops renewing loses the lease after this long; a standby takes over then. */
  ttlMs: number;
  /** Renew (or try to take) this often; well under ttlMs. */
  renewEveryMs: number;
}

/**
 * Leader election on a Postgres lease row. `onElected` runs when this instance becomes leader,
 * `onDemoted` when it loses the lease (a renewal failed or was refused): the leader-only loops
 * must stop there, since another instance may take over once the ttl has passed.
 */
export class LeaderElection {
  private timer: NodeJS.Timeout | null = null;
  private leader = false;
  private stopped = false;
  private attemptCount = 0;
  private readonly db: Database;
  private readonly logger: Logger;
  private readonly options: LeaderOptions;
  private readonly hooks: { onElected: () => void; onDemoted: () => void };

  constructor(
    db: Database,
    logger: Logger,
    options: LeaderOptions,
    hooks: { onElected: () => void; onDemoted: () => void },
  ) {
    this.db = db;
    this.logger = logger;
    this.options = options;
    this.hooks = hooks;
  }

  get isLeader(): boolean {
    return this.leader;
  }

  /** Tries to take or renew the lease so far, failed ones included (what a standby has seen). */
  get attempts(): number {
    return this.attemptCount;
  }

  start(): void {
    this.stopped = false;
    void this.tick();
  }

  /** Stops renewing and hands the lease back so that a standby takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.leader) {
      this.setLeader(false);
      await releaseLease(this.db, this.options.name, this.options.holder).catch(() => {});
    }
  }

  private async tick(): Promise<void> {
    let held = false;
    try {
      held = await acquireLease(this.db, this.options.name, this.options.holder, this.options.ttlMs);
    } catch (error) {
      this.logger.warn({ err: error }, "lease renewal failed");
    }
    if (this.stopped) {
      return;
    }
    this.setLeader(held);
    this.attemptCount++;
    this.timer = setTimeout(() => void this.tick(), this.options.renewEveryMs);
  }

  private setLeader(held: boolean): void {
    if (held === this.leader) {
      return;
    }
    this.leader = held;
    this.logger.info(
      { lease: this.options.name, holder: this.options.holder, leader: held },
      "leadership changed",
    );
    if (held) {
      this.hooks.onElected();
    } else {
      this.hooks.onDemoted();
    }
  }
}
