import { AppError } from "../../lib/index.ts";

/**
 * Counts per tenant of work under way in this process: requests in flight (capped, 429 beyond) and
 * cold loads waited for (for their placements' fair priority). Entries leave at zero.
 */
export class TenantCounters {
  private readonly counts = new Map<string, number>();

  count(tenantId: string): number {
    return this.counts.get(tenantId) ?? 0;
  }

  /** Counts one more; the returned function counts it out (once). */
  enter(tenantId: string): () => void {
    this.counts.set(tenantId, this.count(tenantId) + 1);
    let left = false;
    return () => {
      if (left) {
        return;
      }
      left = true;
      const rest = this.count(tenantId) - 1;
      if (rest <= 0) {
        this.counts.delete(tenantId);
      } else {
        this.counts.set(tenantId, rest);
      }
    };
  }

  /** Like `enter`, refusing with a 429 when `limit` are already under way. */
  enterWithin(tenantId: string, limit: number): () => void {
    const now = this.count(tenantId);
    if (now >= limit) {
      throw new AppError(
        "RATE_LIMITED",
        `this tenant already has ${now} requests in flight (at most ${limit} at once); retry when one ends`,
        { retryAfterSeconds: 1, reason: "too_many_concurrent_requests" },
      );
    }
    return this.enter(tenantId);
  }
}
