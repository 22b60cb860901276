import { LRUCache } from "lru-cache";
import type { Database } from "../../db/index.ts";
import {
  type BaseModelRow,
  listBaseModels,
  type ResolvedAdapterVersion,
  resolveAdapterVersion,
} from "../../db/index.ts";
import { approximateBytes } from "../../lib/index.ts";

export type ResolvedModel =
  | { kind: "adapter"; requested: string; adapter: ResolvedAdapterVersion }
  | { kind: "base"; requested: string; baseModelId: string };

/** Requests' `model` is at most this long (the gateway refuses longer): a key is bounded too. */
export const MAX_MODEL_NAME_BYTES = 256;
/** Resolutions kept per process; each key is a tenant id and a model name (at most 256 bytes). */
const CACHE_ENTRIES = 50_000;
/** And the memory they may take (keys and resolved rows together). */
const CACHE_BYTES = 64 * 1024 * 1024;

const MODEL_NAME = /^([a-z0-9][a-z0-9-]{0,62})(?:@([1-9][0-9]{0,8}))?$/;

/**
 * Resolves a request's `model` for one tenant without a database round trip on the hot path:
 * answers are cached briefly (misses for less), and `invalidateTenant` drops a tenant's entries
 * at once when its adapters change (this process, or another one through the event bus).
 */
export class ModelResolver {
  /** lru-cache keeps no null values: a miss is kept as `{ value: null }` (for less time). */
  private readonly cache: LRUCache<string, { value: ResolvedModel | null }>;
  private bases: { rows: BaseModelRow[]; expiresAt: number } | null = null;
  private readonly db: Database;
  private readonly ttlMs: number;
  private readonly negativeTtlMs: number;

  constructor(db: Database, options: { ttlMs: number; negativeTtlMs: number }) {
    this.db = db;
    this.ttlMs = options.ttlMs;
    this.negativeTtlMs = options.negativeTtlMs;
    this.cache = new LRUCache({
      max: CACHE_ENTRIES,
      maxSize: CACHE_BYTES,
      sizeCalculation: (entry, key) => approximateBytes(entry.value) + 2 * key.length,
      ttl: options.ttlMs,
      ttlAutopurge: false,
    });
  }

  async resolve(tenantId: string, requested: string, now = Date.now()): Promise<ResolvedModel | null> {
    const key = `${tenantId}\u0000${requested}`;
    const hit = this.cache.get(key);
    if (hit) {
      return hit.value;
    }
    const value = await this.lookup(tenantId, requested, now);
    if (Buffer.byteLength(requested) <= MAX_MODEL_NAME_BYTES) {
      this.cache.set(key, { value }, { ttl: value ? this.ttlMs : this.negativeTtlMs });
    }
    return value;
  }

  invalidateTenant(tenantId: string): void {
    const prefix = `${tenantId}\u0000`;
    for (const key of this.cache.keys()) {
      if (key.startsWith(prefix)) {
        this.cache.delete(key);
      }
    }
  }

  /** Drops the cached base models (one was added, or its fallback changed). */
  invalidateBaseModels(): void {
    this.bases = null;
  }

  async baseModels(now = Date.now()): Promise<BaseModelRow[]> {
    if (!this.bases || this.bases.expiresAt <= now) {
      this.bases = { rows: await listBaseModels(this.db), expiresAt: now + this.ttlMs };
    }
    return this.bases.rows;
  }

  private async lookup(tenantId: string, requested: string, now: number): Promise<ResolvedModel | null> {
    const base = (await this.baseModels(now)).find((b) => b.id === requested);
    if (base) {
      return { kind: "base", requested, baseModelId: base.id };
    }
    const match = MODEL_NAME.exec(requested);
    if (!match?.[1]) {
      return null;
    }
    const adapter = await resolveAdapterVersion(this.db, {
      tenantId,
      name: match[1],
      version: match[2] ? Number(match[2]) : null,
    });
    return adapter ? { kind: "adapter", requested, adapter } : null;
  }
}
