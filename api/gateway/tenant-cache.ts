import { LRUCache } from "lru-cache";
import type { Database } from "../../db/index.ts";
import { getTenant, type TenantRow } from "../../db/index.ts";
import { approximateBytes } from "../../lib/index.ts";

/** Tenants whose rows one process keeps (the least recently used beyond it are forgotten). */
const MAX_TENANTS = 100_000;
/** And the memory they may take: a row with a fallback upstream's settings is larger than most. */
const MAX_BYTES = 64 * 1024 * 1024;

/**
 * Tenants' rows (limits, budget, fallback) by verified tenant id, so that a request needs no
 * database round trip: cached for `ttlMs`, and dropped at once when a `tenant-changed` event says so.
 */
export class TenantCache {
  private readonly rows: LRUCache<string, { row: TenantRow | null }>;
  private readonly db: Database;

  /** `maxTenants` and `maxBytes` bound the cache (defaults: 100,000 rows, 64 MiB). */
  constructor(options: { db: Database; ttlMs: number; maxTenants?: number; maxBytes?: number }) {
    this.db = options.db;
    this.rows = new LRUCache({
      max: options.maxTenants ?? MAX_TENANTS,
      maxSize: options.maxBytes ?? MAX_BYTES,
      sizeCalculation: (entry, tenantId) => approximateBytes(entry.row) + 2 * tenantId.length,
      ttl: options.ttlMs,
      ttlAutopurge: false,
    });
  }

  /** The tenant's row (null once deleted): a PATCH takes effect within `ttlMs` on every gateway. */
  async get(tenantId: string): Promise<TenantRow | null> {
    const hit = this.rows.get(tenantId);
    if (hit) {
      return hit.row;
    }
    const row = await getTenant(this.db, tenantId);
    this.rows.set(tenantId, { row });
    return row;
  }

  invalidate(tenantId: string): void {
    this.rows.delete(tenantId);
  }
}
