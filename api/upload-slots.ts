import { AppError } from "../lib/index.ts";

/**
 * Concurrent uploads per tenant in this API process: an upload holds a connection, a worker's time
 * and an S3 multipart upload for as long as the client takes, so one tenant may not hold many.
 * Counts live only while uploads run (a tenant's entry goes when its last upload ends).
 */
export class UploadSlots {
  private readonly running = new Map<string, number>();
  private readonly perTenant: number;

  constructor(perTenant: number) {
    this.perTenant = perTenant;
  }

  /** Uploads the tenant has running in this process now. */
  inUse(tenantId: string): number {
    return this.running.get(tenantId) ?? 0;
  }

  /** Takes a slot or throws a 429; call the returned function exactly once when the upload ends. */
  acquire(tenantId: string): () => void {
    const count = this.running.get(tenantId) ?? 0;
    if (count >= this.perTenant) {
      throw new AppError(
        "RATE_LIMITED",
        `this tenant already has ${count} uploads in progress (at most ${this.perTenant} at once); retry when one ends`,
        { retryAfterSeconds: 5, reason: "too_many_uploads" },
      );
    }
    this.running.set(tenantId, count + 1);
    let released = false;
    return () => {
      if (released) {
        return;
      }
      released = true;
      const left = (this.running.get(tenantId) ?? 1) - 1;
      if (left <= 0) {
        this.running.delete(tenantId);
      } else {
        this.running.set(tenantId, left);
      }
    };
  }
}
