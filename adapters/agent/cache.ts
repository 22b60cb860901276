import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Logger } from "../../lib/index.ts";
import { loraNameProblem } from "./schema.ts";

export const CONFIG_FILE = "adapter_config.json";
/** Always this name: whatever the object holds, vLLM parses it as safetensors and never unpickles it. */
export const WEIGHTS_FILE = "adapter_model.safetensors";
/** Beside the adapter files; vLLM reads only the two files above. */
export const META_FILE = ".loraplane-entry.json";
/** Downloads and deletions in progress; adapter names cannot start with a dot, so these never clash. */
export const TEMP_PREFIX = ".tmp-";

/** What the agent knows about one adapter directory `<cache>/<lora_name>/`. */
export interface CacheEntry {
  readonly loraName: string;
  readonly dir: string;
  bytes: number;
  /** Null for a directory found without (readable) metadata. */
  sha256: string | null;
  sizeBytes: number | null;
  objectKey: string | null;
  configObjectKey: string | null;
  lastUsedAt: number;
  /** Unloaded but maybe still read by queued or running requests: the GC loop removes it once none can. */
  pendingDelete: boolean;
  /** Last seen on the replica's /v1/models; undefined until asked. In memory only. */
  registered: boolean | undefined;
  /**
   * Newest `lora_requests_info` timestamp of the first scrape that saw the name unregistered. A
   * newer series without the name proves every request admitted before the unload was counted.
   */
  unregisteredBaseline: number | undefined;
  /** Bumped by every load and unload, so a scrape taken before one is not applied after it. */
  epoch: number;
}

interface EntryMeta {
  lora_name: string;
  sha256: string | null;
  size_bytes: number | null;
  object_key: string | null;
  config_object_key: string | null;
  last_used_at: string;
  pending_delete: boolean;
}

export interface NewEntry {
  loraName: string;
  sha256: string;
  sizeBytes: number;
  objectKey: string;
  configObjectKey: string;
}

/**
 * The adapter directories on the replica's disk and the bytes they take. The index lives in memory
 * and is rebuilt from the directory at start; each entry's metadata file makes it survive restarts.
 */
export class DiskCache {
  readonly dir: string;
  readonly budgetBytes: number;
  private readonly now: () => number;
  private readonly logger: Logger;
  private readonly entries = new Map<string, CacheEntry>();
  private readonly reservations = new Map<string, number>();

  constructor(options: { dir: string; budgetBytes: number; now: () => number; logger: Logger }) {
    this.dir = options.dir;
    this.budgetBytes = options.budgetBytes;
    this.now = options.now;
    this.logger = options.logger;
  }

  /** Creates the directory if needed, removes orphan temp dirs and indexes every adapter directory. */
  async open(): Promise<{ entries: number; removedTemp: string[] }> {
    await mkdir(this.dir, { recursive: true });
    this.entries.clear();
    const removedTemp: string[] = [];
    for (const dirent of await readdir(this.dir, { withFileTypes: true })) {
      const path = join(this.dir, dirent.name);
      if (dirent.name.startsWith(TEMP_PREFIX)) {
        await rm(path, { recursive: true, force: true });
        removedTemp.push(dirent.name);
        continue;
      }
      if (!dirent.isDirectory() || loraNameProblem(dirent.name) !== null) {
        this.logger.warn({ path }, "ignoring an unexpected file in the adapter cache");
        continue;
      }
      this.entries.set(dirent.name, await this.readEntry(dirent.name, path));
    }
    return { entries: this.entries.size, removedTemp };
  }

  /** The absolute directory of an adapter; the name has been validated, and is checked again here. */
  pathOf(loraName: string): string {
    const problem = loraNameProblem(loraName);
    const path = join(this.dir, loraName);
    if (problem !== null || dirname(path) !== this.dir) {
      throw new Error(`refusing LoRA name ${JSON.stringify(loraName)} as a cache path`);
    }
    return path;
  }

  get(loraName: string): CacheEntry | undefined {
    return this.entries.get(loraName);
  }

  list(): CacheEntry[] {
    return [...this.entries.values()];
  }

  get size(): number {
    return this.entries.size;
  }

  usedBytes(): number {
    let total = 0;
    for (const e of this.entries.values()) {
      total += e.bytes;
    }
    return total;
  }

  reservedBytes(): number {
    let total = 0;
    for (const b of this.reservations.values()) {
      total += b;
    }
    return total;
  }

  freeBytes(): number {
    return this.budgetBytes - this.usedBytes() - this.reservedBytes();
  }

  /** Holds room for a download in progress, so concurrent loads cannot overcommit the budget. */
  reserve(loraName: string, bytes: number): void {
    this.reservations.set(loraName, bytes);
  }

  release(loraName: string): void {
    this.reservations.delete(loraName);
  }

  async makeTempDir(): Promise<string> {
    const path = join(this.dir, `${TEMP_PREFIX}${randomBytes(8).toString("hex")}`);
    await mkdir(path);
    return path;
  }

  /**
   * Moves a finished download into place: metadata written and flushed, then one rename of the whole
   * directory, then the parent flushed. The files appear complete or not at all.
   */
  async commit(tempDir: string, entry: NewEntry): Promise<CacheEntry> {
    const finalPath = this.pathOf(entry.loraName);
    const created: CacheEntry = {
      loraName: entry.loraName,
      dir: finalPath,
      bytes: 0,
      sha256: entry.sha256,
      sizeBytes: entry.sizeBytes,
      objectKey: entry.objectKey,
      configObjectKey: entry.configObjectKey,
      lastUsedAt: this.now(),
      pendingDelete: false,
      registered: undefined,
      unregisteredBaseline: undefined,
      epoch: 0,
    };
    await writeFile(join(tempDir, META_FILE), JSON.stringify(toMeta(created)), { flush: true });
    await syncDir(tempDir);
    created.bytes = await dirBytes(tempDir);
    await rename(tempDir, finalPath);
    await syncDir(this.dir);
    this.entries.set(entry.loraName, created);
    return created;
  }

  /** Rewrites the entry's metadata (last use, pending deletion) atomically. */
  async persist(entry: CacheEntry): Promise<void> {
    const tmp = join(entry.dir, `${META_FILE}.tmp`);
    await writeFile(tmp, JSON.stringify(toMeta(entry)), { flush: true });
    await rename(tmp, join(entry.dir, META_FILE));
  }

  /** Takes the directory out of the replica's sight in one rename, then deletes it. */
  async remove(loraName: string): Promise<void> {
    const path = this.pathOf(loraName);
    this.entries.delete(loraName);
    const doomed = join(this.dir, `${TEMP_PREFIX}del-${randomBytes(8).toString("hex")}`);
    try {
      await rename(path, doomed);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") {
        return;
      }
      throw error;
    }
    await syncDir(this.dir);
    await rm(doomed, { recursive: true, force: true });
  }

  /** Adopts a directory found without metadata once its weights have been hashed and matched. */
  async adopt(entry: CacheEntry, meta: NewEntry): Promise<void> {
    entry.sha256 = meta.sha256;
    entry.sizeBytes = meta.sizeBytes;
    entry.objectKey = meta.objectKey;
    entry.configObjectKey = meta.configObjectKey;
    await this.persist(entry);
    entry.bytes = await dirBytes(entry.dir);
  }

  private async readEntry(loraName: string, path: string): Promise<CacheEntry> {
    const entry: CacheEntry = {
      loraName,
      dir: path,
      bytes: await dirBytes(path),
      sha256: null,
      sizeBytes: null,
      objectKey: null,
      configObjectKey: null,
      lastUsedAt: (await stat(path)).mtimeMs,
      pendingDelete: false,
      registered: undefined,
      unregisteredBaseline: undefined,
      epoch: 0,
    };
    try {
      const meta = JSON.parse(await readFile(join(path, META_FILE), "utf8")) as Partial<EntryMeta>;
      if (meta.lora_name === loraName) {
        entry.sha256 = typeof meta.sha256 === "string" ? meta.sha256 : null;
        entry.sizeBytes = typeof meta.size_bytes === "number" ? meta.size_bytes : null;
        entry.objectKey = typeof meta.object_key === "string" ? meta.object_key : null;
        entry.configObjectKey = typeof meta.config_object_key === "string" ? meta.config_object_key : null;
        entry.pendingDelete = meta.pending_delete === true;
        const lastUsed = Date.parse(meta.last_used_at ?? "");
        if (Number.isFinite(lastUsed)) {
          entry.lastUsedAt = lastUsed;
        }
      }
    } catch (error) {
      this.logger.warn({ err: error, loraName }, "adapter directory without readable metadata");
    }
    return entry;
  }
}

function toMeta(e: CacheEntry): EntryMeta {
  return {
    lora_name: e.loraName,
    sha256: e.sha256,
    size_bytes: e.sizeBytes,
    object_key: e.objectKey,
    config_object_key: e.configObjectKey,
    last_used_at: new Date(e.lastUsedAt).toISOString(),
    pending_delete: e.pendingDelete,
  };
}

/** Apparent size of the regular files directly inside `dir` (adapter directories are flat). */
async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const dirent of await readdir(dir, { withFileTypes: true })) {
    if (dirent.isFile()) {
      total += (await stat(join(dir, dirent.name))).size;
    }
  }
  return total;
}

/** Flushes a directory's entries (a rename is durable only once its parent is). */
async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } catch {
    // Some filesystems refuse fsync on a directory; the rename is still atomic there.
  } finally {
    await handle.close();
  }
}
