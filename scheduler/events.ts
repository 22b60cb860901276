import type { Config, Logger } from "../lib/index.ts";
import { createRedis, type Redis } from "../lib/index.ts";

/** What one process tells the others through Redis pub/sub. Postgres stays the truth; events only wake readers. */
export type FleetEvent =
  | {
      type: "placement";
      adapterVersionId: string;
      replicaId: string;
      /**
       * `present`: the leader was asked to place a version it finds placed already (the asking
       * gateway's view was stale): it wakes the waiters, but no load happened.
       */
      state: "loaded" | "present" | "unloaded" | "failed";
      message?: string;
    }
  /** A tenant's adapters changed (new version, deletion): drop cached model resolutions. */
  | { type: "adapters-changed"; tenantId: string }
  /** Replicas were added, removed, drained, or went up or down. */
  | { type: "fleet-changed" }
  /** A tenant's limits, budget or fallback changed: drop cached tenant rows. */
  | { type: "tenant-changed"; tenantId: string }
  /** A base model was added or its fallback changed: drop cached base models. */
  | { type: "base-models-changed" }
  /** A signing key was rotated: every API copy re-reads its keys (signs with the new one, retires the old). */
  | { type: "signing-keys-changed" }
  /**
   * A gateway's request failed at a replica before its first byte: the leader checks the replica at
   * once instead of at its next poll (or, for a lost adapter, its next reconcile).
   */
  | {
      type: "replica-failed";
      replicaId: string;
      reason: "unreachable" | "timeout" | "server_error" | "lost_adapter";
      adapterVersionId: string | null;
    };

export class EventBus {
  private readonly publisher: Redis;
  private subscriber: Redis | null = null;
  private readonly handlers = new Set<(event: FleetEvent) => void>();
  private readonly channel: string;
  private readonly config: Config["redis"];
  private readonly logger: Logger;

  constructor(config: Config["redis"], logger: Logger) {
    this.config = config;
    this.logger = logger;
    this.channel = `${config.prefix}events`;
    this.publisher = createRedis(config, "producer");
  }

  async publish(event: FleetEvent): Promise<void> {
    await this.publisher.publish(this.channel, JSON.stringify(event));
  }

  /** Resolves once subscribed, so that an event published after it returns is not missed. */
  async subscribe(handler: (event: FleetEvent) => void): Promise<() => void> {
    this.handlers.add(handler);
    if (!this.subscriber) {
      const subscriber = createRedis(this.config, "worker");
      this.subscriber = subscriber;
      subscriber.on("message", (_channel: string, message: string) => {
        let event: FleetEvent;
        try {
          event = JSON.parse(message) as FleetEvent;
        } catch {
          this.logger.warn({ message: message.slice(0, 200) }, "unreadable fleet event");
          return;
        }
        for (const h of this.handlers) {
          h(event);
        }
      });
      await subscriber.subscribe(this.channel);
    }
    return () => this.handlers.delete(handler);
  }

  async close(): Promise<void> {
    this.handlers.clear();
    await Promise.allSettled([this.publisher.quit(), this.subscriber?.quit()]);
  }
}
