import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type {
  LoadAdapterResult,
  ReplicaClient,
  TransportFailure,
  UnloadAdapterResult,
} from "../../engines/index.ts";
import type { Logger } from "../../lib/index.ts";
import type { AdapterStore } from "../storage.ts";
import { type CacheEntry, DiskCache, WEIGHTS_FILE } from "./cache.ts";
import { downloadAdapter } from "./download.ts";
import { AgentError } from "./errors.ts";
import { KeyedLock } from "./locks.ts";
import type { CacheDto, LoadAdapterBody, LoadAdapterResponse, UnloadAdapterResponse } from "./schema.ts";

export interface ReplicaAgentOptions {
  store: AdapterStore;
  replica: ReplicaClient;
  cacheDir: string;
  budgetBytes: number;
  logger: Logger;
  /** Period of the loop that deletes files of unloaded adapters once no request can read them. */
  gcIntervalMs?: number;
  /**
   * Files stay this long after an adapter was unloaded or last used, even when the replica looks
   * idle: vLLM picks a request's LoRA before the request shows in its metrics, and a worker that
   * must then re-read deleted files takes the engine down.
   */
  unloadGraceMs?: number;
  /** Milliseconds since the epoch, for `last_used_at` and LRU eviction. */
  now?: () => number;
}

/** What the replica says right now: registered names and which adapters have requests in flight. */
interface ReplicaView {
  /** name → lora_path as registered. */
  registered: Map<string, string | null>;
  /** Adapters in the newest `lora_requests_info` series (queued or running). */
  inFlight: Set<string>;
  /** That series' timestamp; -Infinity when the replica has not logged LoRA stats yet. */
  loraUpdatedAt: number;
  /** No request of any kind is running or waiting. */
  idle: boolean;
}

/** Default of `unloadGraceMs` (AGENT_UNLOAD_GRACE_MS). */
export const DEFAULT_UNLOAD_GRACE_MS = 60_000;

/** Replica answers after which the name is certainly not registered by this call. */
const DEFINITE_LOAD_FAILURES = new Set<LoadAdapterResult["kind"]>([
  "adapter_rejected",
  "not_found",
  "invalid_input",
  "runtime_updates_disabled",
  "unauthorized",
]);

/**
 * The replica sidecar's logic: fetch adapter versions from S3 into the cache directory the vLLM
 * replica reads, register and unregister them, and delete files only when nothing can read them
 * (vLLM dies if a registered or in-use adapter's files vanish). Everything touching one LoRA name
 * runs under that name's lock.
 */
export class ReplicaAgent {
  readonly cache: DiskCache;
  private readonly store: AdapterStore;
  private readonly replica: ReplicaClient;
  private readonly logger: Logger;
  private readonly gcIntervalMs: number;
  private readonly unloadGraceMs: number;
  private readonly now: () => number;
  private readonly names = new KeyedLock();
  private readonly budget = new KeyedLock();
  private gcTimer: NodeJS.Timeout | undefined;
  private gcRunning: Promise<unknown> | undefined;
  private stopped = false;
  private downloadCount = 0;

  constructor(options: ReplicaAgentOptions) {
    this.store = options.store;
    this.replica = options.replica;
    this.logger = options.logger;
    this.gcIntervalMs = options.gcIntervalMs ?? 5_000;
    this.unloadGraceMs = options.unloadGraceMs ?? DEFAULT_UNLOAD_GRACE_MS;
    this.now = options.now ?? Date.now;
    this.cache = new DiskCache({
      dir: options.cacheDir,
      budgetBytes: options.budgetBytes,
      now: this.now,
      logger: options.logger,
    });
  }

  /** Rebuilds the cache index from disk (orphan temp dirs removed). */
  async open(): Promise<void> {
    const { entries, removedTemp } = await this.cache.open();
    this.logger.info(
      { cacheDir: this.cache.dir, entries, bytes: this.cache.usedBytes(), removedTemp },
      "adapter cache indexed",
    );
  }

  startGc(): void {
    this.stopped = false;
    const tick = () => {
      this.gcRunning = this.collectGarbage()
        .catch((error: unknown) => this.logger.error({ err: error }, "adapter cache GC failed"))
        .finally(() => {
          if (!this.stopped) {
            this.gcTimer = setTimeout(tick, this.gcIntervalMs);
            this.gcTimer.unref();
          }
        });
    };
    this.gcTimer = setTimeout(tick, this.gcIntervalMs);
    this.gcTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.gcTimer);
    await this.gcRunning;
  }

  /** Completed S3 downloads since start (concurrent loads of one name share one). */
  get downloads(): number {
    return this.downloadCount;
  }

  // ---- load ------------------------------------------------------------------------------------

  async load(input: LoadAdapterBody): Promise<LoadAdapterResponse> {
    return this.names.run(input.lora_name, () => this.loadLocked(input));
  }

  private async loadLocked(input: LoadAdapterBody): Promise<LoadAdapterResponse> {
    const name = input.lora_name;
    const path = this.cache.pathOf(name);
    const models = await this.replica.listModels();
    if (models.kind !== "ok") {
      throw replicaFailure(models, "list the replica's adapters");
    }
    const card = models.value.adapters.find((c) => c.id === name);
    if (card && card.root !== path) {
      throw new AgentError(
        "name_conflict",
        `'${name}' is already registered on the replica with path ${JSON.stringify(card.root)}, not ${path}; load this version under a new name`,
      );
    }
    let entry = this.cache.get(name);
    if (entry && !(await this.holds(entry, input))) {
      if (card) {
        throw new AgentError(
          "name_conflict",
          `'${name}' is registered with files of another adapter version (sha256 ${entry.sha256 ?? "unknown"}); versions must be loaded under new names`,
        );
      }
      const view = await this.scrapeOrThrow("check that nothing reads the stale files");
      if (!this.safeToDelete(entry, view)) {
        throw new AgentError(
          "name_conflict",
          `'${name}' has stale files from another version that queued or running requests may still read; retry later`,
        );
      }
      this.logger.info({ loraName: name }, "replacing stale adapter files");
      await this.cache.remove(name);
      entry = undefined;
    }

    let downloaded = false;
    if (!entry) {
      entry = await this.download(input);
      downloaded = true;
    }
    entry.epoch += 1;
    entry.lastUsedAt = this.now();
    entry.pendingDelete = false;
    if (card) {
      entry.registered = true;
      entry.unregisteredBaseline = undefined;
      await this.cache.persist(entry);
      return { lora_name: name, path, status: "already_loaded", downloaded, bytes: entry.bytes };
    }
    await this.cache.persist(entry);

    const started = performance.now();
    const result = await this.replica.loadAdapter({ loraName: name, absolutePath: path });
    if (result.kind === "ok") {
      entry.registered = true;
      entry.unregisteredBaseline = undefined;
      this.logger.info(
        {
          loraName: name,
          path,
          downloaded,
          bytes: entry.bytes,
          loadMs: Math.round(performance.now() - started),
        },
        "adapter loaded",
      );
      return { lora_name: name, path, status: "loaded", downloaded, bytes: entry.bytes };
    }
    await this.cleanUpFailedLoad(entry, downloaded, result);
    throw loadFailure(result, name, path);
  }

  /** Whether the cached files are this version: metadata when present, else the weights rehashed. */
  private async holds(entry: CacheEntry, input: LoadAdapterBody): Promise<boolean> {
    const weights = join(entry.dir, WEIGHTS_FILE);
    let size: number;
    try {
      size = (await stat(weights)).size;
    } catch {
      return false;
    }
    if (size !== input.size_bytes) {
      return false;
    }
    if (entry.sha256 !== null) {
      return entry.sha256 === input.sha256 && entry.sizeBytes === input.size_bytes;
    }
    const hash = createHash("sha256");
    for await (const chunk of createReadStream(weights)) {
      hash.update(chunk as Buffer);
    }
    if (hash.digest("hex") !== input.sha256) {
      return false;
    }
    await this.cache.adopt(entry, toNewEntry(input));
    return true;
  }

  private async download(input: LoadAdapterBody): Promise<CacheEntry> {
    const name = input.lora_name;
    const temp = await this.cache.makeTempDir();
    const started = performance.now();
    try {
      await downloadAdapter(
        this.store,
        {
          loraName: name,
          objectKey: input.object_key,
          configObjectKey: input.config_object_key,
          sha256: input.sha256,
          sizeBytes: input.size_bytes,
        },
        temp,
        (bytes) => this.reserve(name, bytes),
      );
      const entry = await this.cache.commit(temp, toNewEntry(input));
      this.downloadCount += 1;
      this.logger.info(
        { loraName: name, bytes: entry.bytes, downloadMs: Math.round(performance.now() - started) },
        "adapter downloaded",
      );
      return entry;
    } catch (error) {
      await rm(temp, { recursive: true, force: true });
      throw error;
    } finally {
      this.cache.release(name);
    }
  }

  /**
   * Makes room for `bytes`, evicting least-recently-used entries that are not registered and that
   * no request can be reading, then reserves it. One reservation at a time.
   */
  private async reserve(name: string, bytes: number): Promise<void> {
    const release = await this.budget.acquire("budget");
    try {
      const budget = this.cache.budgetBytes;
      if (bytes > budget) {
        throw new AgentError(
          "insufficient_storage",
          `'${name}' needs ${bytes} bytes but the whole adapter cache budget is ${budget} bytes (AGENT_DISK_BUDGET_BYTES)`,
        );
      }
      if (this.cache.freeBytes() < bytes) {
        await this.evictFor(name, bytes);
      }
      const free = this.cache.freeBytes();
      if (free < bytes) {
        const entries = this.cache.list();
        const registered = entries.filter((e) => e.registered === true).length;
        throw new AgentError(
          "insufficient_storage",
          `no room for '${name}' (${bytes} bytes): the cache holds ${this.cache.usedBytes()} of ${budget} bytes ` +
            `in ${entries.length} adapters (${registered} registered on the replica, the rest pending deletion ` +
            `or still read by requests) and ${this.cache.reservedBytes()} bytes of downloads in progress; ` +
            "unload adapters or raise AGENT_DISK_BUDGET_BYTES",
        );
      }
      this.cache.reserve(name, bytes);
    } finally {
      release();
    }
  }

  private async evictFor(name: string, bytes: number): Promise<void> {
    const epochs = this.epochs();
    const view = await this.scrapeOrThrow("find adapters it is safe to evict");
    const candidates = this.cache
      .list()
      .filter((e) => e.loraName !== name && epochs.get(e.loraName) === e.epoch)
      .filter((e) => this.safeToDelete(e, view))
      .sort((a, b) => a.lastUsedAt - b.lastUsedAt);
    this.observe(view, epochs);
    for (const victim of candidates) {
      if (this.cache.freeBytes() >= bytes) {
        break;
      }
      const release = this.names.tryAcquire(victim.loraName);
      if (!release) {
        continue;
      }
      try {
        // A load or unload since the scrape makes the view stale for this entry.
        if (this.cache.get(victim.loraName) === victim && victim.epoch === epochs.get(victim.loraName)) {
          await this.cache.remove(victim.loraName);
          this.logger.info(
            { loraName: victim.loraName, bytes: victim.bytes, for: name },
            "evicted unregistered adapter",
          );
        }
      } finally {
        release();
      }
    }
  }

  /** After a failed load, neither the name nor the files may stay behind. */
  private async cleanUpFailedLoad(
    entry: CacheEntry,
    downloaded: boolean,
    result: Exclude<LoadAdapterResult, { kind: "ok" }>,
  ): Promise<void> {
    const definite =
      DEFINITE_LOAD_FAILURES.has(result.kind) ||
      (result.kind === "unreachable" && result.error.startsWith("ECONNREFUSED"));
    if (definite && downloaded) {
      // Fresh files under a name the replica never accepted: nothing can be reading them.
      await this.cache.remove(entry.loraName);
      return;
    }
    if (!definite) {
      // A timeout or a dropped connection may have registered it after all.
      const models = await this.replica.listModels();
      if (models.kind === "ok" && models.value.adapters.some((c) => c.id === entry.loraName)) {
        const unloaded = await this.replica.unloadAdapter(entry.loraName);
        this.logger.warn(
          { loraName: entry.loraName, result: result.kind, unload: unloaded.kind },
          "load failed ambiguously but the replica registered the adapter; unloaded it",
        );
      }
    }
    entry.epoch += 1;
    entry.registered = undefined;
    entry.unregisteredBaseline = undefined;
    entry.pendingDelete = true;
    await this.cache.persist(entry);
    await this.collectIfSafe(entry);
  }

  // ---- unload ----------------------------------------------------------------------------------

  async unload(name: string): Promise<UnloadAdapterResponse> {
    return this.names.run(name, () => this.unloadLocked(name));
  }

  private async unloadLocked(name: string): Promise<UnloadAdapterResponse> {
    const result = await this.replica.unloadAdapter(name);
    if (result.kind === "not_found") {
      if (!this.cache.get(name)) {
        throw new AgentError(
          "not_found",
          `'${name}' is neither registered on the replica nor in this agent's cache`,
        );
      }
    } else if (result.kind !== "ok") {
      throw unloadFailure(result, name);
    }
    const unregistered = result.kind === "ok";
    this.logger.info({ loraName: name, unregistered }, "adapter unloaded");
    const entry = this.cache.get(name);
    if (!entry) {
      return { lora_name: name, unregistered, files: "none" };
    }
    entry.epoch += 1;
    entry.registered = false;
    entry.unregisteredBaseline = undefined;
    entry.lastUsedAt = this.now();
    entry.pendingDelete = true;
    await this.cache.persist(entry);
    const removed = await this.collectIfSafe(entry);
    return { lora_name: name, unregistered, files: removed ? "removed" : "pending_delete" };
  }

  // ---- garbage collection ----------------------------------------------------------------------

  /**
   * One GC pass: refreshes what the replica registers and runs, then deletes every pending entry
   * no request can read any more. Entries being loaded or unloaded are left to their own call.
   */
  async collectGarbage(): Promise<{ removed: string[] }> {
    const removed: string[] = [];
    if (this.cache.size === 0) {
      return { removed };
    }
    const epochs = this.epochs();
    const view = await this.scrape();
    if (view instanceof AgentError) {
      this.logger.debug({ err: view }, "GC skipped: replica not readable");
      return { removed };
    }
    this.observe(view, epochs);
    for (const entry of this.cache.list()) {
      if (!entry.pendingDelete) {
        continue;
      }
      const release = this.names.tryAcquire(entry.loraName);
      if (!release) {
        continue;
      }
      try {
        if (
          this.cache.get(entry.loraName) === entry &&
          entry.pendingDelete &&
          (await this.collectIfSafe(entry))
        ) {
          removed.push(entry.loraName);
        }
      } finally {
        release();
      }
    }
    return { removed };
  }

  /** Deletes the entry's files if the replica, asked now, shows that nothing can read them. */
  private async collectIfSafe(entry: CacheEntry): Promise<boolean> {
    const epochs = this.epochs();
    const view = await this.scrape();
    if (view instanceof AgentError) {
      this.logger.warn({ err: view, loraName: entry.loraName }, "kept adapter files: replica not readable");
      return false;
    }
    if (this.safeToDelete(entry, view)) {
      await this.cache.remove(entry.loraName);
      this.logger.info({ loraName: entry.loraName, bytes: entry.bytes }, "adapter files removed");
      return true;
    }
    this.observe(view, epochs, entry.loraName);
    return false;
  }

  /**
   * vLLM re-reads an adapter's files whenever a request for it finds it evicted from the engine's
   * caches, and dies if they are gone. Safe: past the grace period since the adapter was unloaded
   * or last used (a request may have picked the adapter before it shows in the metrics), not
   * registered, absent from the newest `lora_requests_info`, and that series is newer than the first
   * scrape that saw the name unregistered (so requests admitted before the unload were counted) or
   * the replica is idle.
   */
  private safeToDelete(entry: CacheEntry, view: ReplicaView): boolean {
    if (this.now() - entry.lastUsedAt < this.unloadGraceMs) {
      return false;
    }
    if (view.registered.has(entry.loraName) || view.inFlight.has(entry.loraName)) {
      return false;
    }
    if (view.idle || this.replica.unloadDrains) {
      return true;
    }
    return entry.unregisteredBaseline !== undefined && view.loraUpdatedAt > entry.unregisteredBaseline;
  }

  /**
   * Records registration and first-seen-unregistered baselines, skipping entries changed since
   * `epochs` was taken and entries another call is working on (`held` is the caller's own).
   */
  private observe(view: ReplicaView, epochs: Map<string, number>, held?: string): void {
    for (const entry of this.cache.list()) {
      const busy = entry.loraName !== held && this.names.isBusy(entry.loraName);
      if (epochs.get(entry.loraName) !== entry.epoch || busy) {
        continue;
      }
      if (view.registered.has(entry.loraName)) {
        entry.registered = true;
        entry.unregisteredBaseline = undefined;
      } else {
        entry.registered = false;
        entry.unregisteredBaseline ??= view.loraUpdatedAt;
      }
    }
  }

  private epochs(): Map<string, number> {
    return new Map(this.cache.list().map((e) => [e.loraName, e.epoch]));
  }

  private async scrape(): Promise<ReplicaView | AgentError> {
    const [models, metrics] = await Promise.all([this.replica.listModels(), this.replica.metrics()]);
    if (models.kind !== "ok") {
      return replicaFailure(models, "list the replica's adapters");
    }
    if (metrics.kind !== "ok") {
      return replicaFailure(metrics, "read the replica's metrics");
    }
    const m = metrics.value;
    return {
      registered: new Map(models.value.adapters.map((c) => [c.id, c.root])),
      inFlight: new Set([...(m.lora?.running ?? []), ...(m.lora?.waiting ?? [])]),
      loraUpdatedAt: m.lora?.updatedAt ?? Number.NEGATIVE_INFINITY,
      idle: m.running === 0 && m.waiting === 0,
    };
  }

  private async scrapeOrThrow(purpose: string): Promise<ReplicaView> {
    const view = await this.scrape();
    if (view instanceof AgentError) {
      throw new AgentError(view.code, `cannot ${purpose}: ${view.message}`);
    }
    return view;
  }

  // ---- state -----------------------------------------------------------------------------------

  async cacheState(): Promise<CacheDto> {
    const models = await this.replica.listModels({ timeoutMs: 3_000 });
    const registered = models.kind === "ok" ? new Set(models.value.adapters.map((c) => c.id)) : null;
    const entries = this.cache
      .list()
      .sort((a, b) => a.loraName.localeCompare(b.loraName))
      .map((e) => ({
        lora_name: e.loraName,
        bytes: e.bytes,
        registered: registered ? registered.has(e.loraName) : null,
        pending_delete: e.pendingDelete,
        last_used_at: new Date(e.lastUsedAt).toISOString(),
        sha256: e.sha256,
      }));
    return { bytes: this.cache.usedBytes(), budget_bytes: this.cache.budgetBytes, entries };
  }
}

function toNewEntry(input: LoadAdapterBody) {
  return {
    loraName: input.lora_name,
    sha256: input.sha256,
    sizeBytes: input.size_bytes,
    objectKey: input.object_key,
    configObjectKey: input.config_object_key,
  };
}

function replicaFailure(failure: TransportFailure, action: string): AgentError {
  switch (failure.kind) {
    case "unreachable":
      return new AgentError(
        "replica_unreachable",
        `cannot ${action}: replica unreachable (${failure.error})`,
      );
    case "timeout":
      return new AgentError(
        "replica_unreachable",
        `cannot ${action}: the replica did not answer within ${failure.timeoutMs} ms`,
      );
    case "unauthorized":
      return new AgentError(
        "replica_error",
        `cannot ${action}: the replica refused our API key (check AGENT_REPLICA_API_KEY)`,
      );
    case "replica_error":
      return new AgentError(
        "replica_error",
        `cannot ${action}: the replica answered ${failure.status}: ${failure.message}`,
      );
  }
}

function loadFailure(
  result: Exclude<LoadAdapterResult, { kind: "ok" }>,
  name: string,
  path: string,
): AgentError {
  switch (result.kind) {
    case "adapter_rejected":
      return new AgentError("adapter_rejected", result.message);
    case "not_found":
      return new AgentError(
        "replica_error",
        `the replica found no adapter at ${path} (${result.message}); does it share AGENT_CACHE_DIR's disk?`,
      );
    case "already_loaded":
      return new AgentError(
        "name_conflict",
        `'${name}' was registered on the replica concurrently: ${result.message}`,
      );
    case "runtime_updates_disabled":
      return new AgentError(
        "replica_error",
        "the replica has no dynamic LoRA endpoints: start vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True",
      );
    case "invalid_input":
      return new AgentError("invalid_request", result.message);
    default:
      return replicaFailure(result, `load '${name}'`);
  }
}

function unloadFailure(result: Exclude<UnloadAdapterResult, { kind: "ok" | "not_found" }>, name: string) {
  switch (result.kind) {
    case "runtime_updates_disabled":
      return new AgentError(
        "replica_error",
        "the replica has no dynamic LoRA endpoints: start vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True",
      );
    case "invalid_input":
      return new AgentError("invalid_request", result.message);
    default:
      return replicaFailure(result, `unload '${name}'`);
  }
}
