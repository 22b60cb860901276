import type { Engine, EngineLora } from "./engine.ts";
import { readSglangAdapter, sglangAdapterDir } from "./sglang-adapter.ts";
import type { SglangSimConfig } from "./sglang-config.ts";
import type { SimTokenizer } from "./tokenizer.ts";

/**
 * The LoRA bookkeeping of a simulated SGLang server, as sgl-project/sglang splits it:
 *
 * - the tokenizer manager's `LoRARegistry` (python/sglang/srt/lora/lora_registry.py @ 0270cffc):
 *   name → ref in LRU order (a request's `acquire` moves its adapter to the end), one usage counter
 *   per `lora_id`; `/v1/models` lists it;
 * - `lora_ref_cache`: every adapter ever loaded, so a request naming an unloaded one reloads it
 *   (tokenizer_manager.py `_resolve_lora_path`, index excerpts 325668100 / 55060575486);
 * - the scheduler's `LoRAManager.lora_refs` (lora_manager.py, excerpt 104396548): what the backend
 *   holds, in load order; `loaded_adapters` in every load/unload answer is this map, name → path;
 * - `lora_update_lock`: loads and unloads run one at a time (tokenizer_control_mixin.py @ 00a2ca2e).
 */

export interface SglangAdapter {
  name: string;
  /** lora_path as sent. */
  path: string;
  pinned: boolean;
  /** The engine-side identity: a fresh one per load, as SGLang mints a new `lora_id` per load. */
  lora: EngineLora;
}

interface UsageCounter {
  count: number;
  waiters: (() => void)[];
}

export interface LoraUpdateOutput {
  success: boolean;
  error_message: string | null;
  loaded_adapters: Record<string, string> | null;
}

export interface SglangState {
  cfg: SglangSimConfig;
  tok: SimTokenizer;
  engine: Engine;
  /** LoRARegistry._registry: least recently used first. */
  registry: Map<string, SglangAdapter>;
  /** LoRAManager.lora_refs: the backend's adapters by engine id, in load order. */
  backend: Map<number, SglangAdapter>;
  /** lora_ref_cache: name → the last load's path and pinned flag. */
  refCache: Map<string, { path: string; pinned: boolean }>;
  /** Usage counters by engine id (LoRARegistry._counters). */
  counters: Map<number, UsageCounter>;
  /** Names whose unload is waiting for their requests to finish. */
  draining: Set<string>;
  nextLoraId: number;
  /** Tail of the lora_update_lock queue. */
  lock: Promise<unknown>;
  abortedRequestIds: string[];
  inFlight: number;
}

/** Python's repr of `OrderedDict.keys()` / `dict.keys()`, as SGLang's messages print them. */
export function pyKeys(kind: "odict_keys" | "dict_keys", names: Iterable<string>): string {
  return `${kind}([${[...names].map((n) => `'${n}'`).join(", ")}])`;
}

/** `async with self.lora_update_lock`: one load or unload at a time, in arrival order. */
export function withUpdateLock<T>(s: SglangState, fn: () => Promise<T>): Promise<T> {
  const run = s.lock.then(fn, fn);
  s.lock = run.catch(() => undefined);
  return run;
}

function loadedAdapters(s: SglangState): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of s.backend.values()) {
    out[a.name] = a.path;
  }
  return out;
}

function numPinned(s: SglangState): number {
  let n = 0;
  for (const a of s.backend.values()) {
    n += a.pinned ? 1 : 0;
  }
  return n;
}

const LORA_DISABLED = "LoRA is not enabled. Please set `--enable-lora` to enable LoRA.";

/** The scheduler side of a load (`LoRAManager.load_lora_adapter`): the engine reads and caches it. */
async function backendLoad(s: SglangState, name: string, path: string, pinned: boolean) {
  const { cfg } = s;
  const fail = (message: string): LoraUpdateOutput => ({
    success: false,
    error_message: message,
    loaded_adapters: loadedAdapters(s),
  });
  const perBatch = cfg.maxLorasPerBatch;
  if (pinned && numPinned(s) >= perBatch - 1) {
    return {
      out: fail(
        `Already have ${numPinned(s)} pinned adapters, max allowed is ${perBatch - 1} (reserving 1 slot for dynamic use). Please unpin some adapters or increase max_loras_per_batch.`,
      ),
    };
  }
  const read = await readSglangAdapter(path, cfg.cwd);
  if (!read.ok) {
    return { out: fail(read.message) };
  }
  // validate_new_adapter: the name check, then the memory pool's rank / target-module check.
  if ([...s.backend.values()].some((a) => a.name === name)) {
    return { out: fail(`Failed to load LoRA adapter ${name} because it is already loaded`) };
  }
  if (!(read.rank <= cfg.maxLoraRank)) {
    return {
      out: fail(
        `LoRA adapter ${name} with rank ${read.rank} is incompatible with the current LoRA memory pool configuration. Please ensure that the LoRA adapter's rank is within the configured \`--max-lora-rank\` and that the target modules are included in \`--lora-target-modules\`.`,
      ),
    };
  }
  const lora: EngineLora = {
    name,
    intId: s.nextLoraId++,
    path,
    dir: sglangAdapterDir(path, cfg.cwd),
    loadInplace: false,
  };
  const res = await s.engine.addLora(lora);
  if (!res.ok) {
    return { out: fail(res.kind === "not_found" ? `No such adapter: ${path}` : res.message) };
  }
  const adapter: SglangAdapter = { name, path, pinned, lora };
  s.backend.set(lora.intId, adapter);
  return { out: { success: true, error_message: "", loaded_adapters: loadedAdapters(s) }, adapter };
}

/**
 * `_unload_lora_adapter_locked` (tokenizer_control_mixin.py @ 00a2ca2e): unregister (new requests
 * stop finding it), wait — without a time limit — until the requests using it have finished, then
 * unload it from the backend. Throws SGLang's ValueError text for an unknown name.
 */
async function unloadLocked(s: SglangState, name: string): Promise<LoraUpdateOutput> {
  const adapter = s.registry.get(name);
  if (!adapter) {
    throw new Error(
      `LoRA with name ${name} does not exist. Loaded LoRAs: ${pyKeys("odict_keys", s.registry.keys())}`,
    );
  }
  s.registry.delete(name);
  s.draining.add(name);
  try {
    const counter = s.counters.get(adapter.lora.intId);
    if (counter && counter.count > 0) {
      await new Promise<void>((r) => counter.waiters.push(r));
    }
    s.counters.delete(adapter.lora.intId);
  } finally {
    s.draining.delete(name);
  }
  s.backend.delete(adapter.lora.intId);
  await s.engine.removeLora(adapter.lora.intId);
  return { success: true, error_message: "", loaded_adapters: loadedAdapters(s) };
}

/**
 * `TokenizerControlMixin.load_lora_adapter` (tokenizer_control_mixin.py @ 00a2ca2e): load on the
 * backend, register on success, then — with `--max-loaded-loras` — unload least recently used,
 * unpinned adapters until the registry fits (each unload drains its requests first), dropping them
 * from `loaded_adapters`. A load past the limit evicts; it is never refused for it.
 */
export function loadAdapter(
  s: SglangState,
  name: string,
  path: string,
  pinned: boolean,
): Promise<LoraUpdateOutput> {
  return withUpdateLock(s, async () => {
    if (!s.cfg.enableLora) {
      return { success: false, error_message: LORA_DISABLED, loaded_adapters: null };
    }
    const { out, adapter } = await backendLoad(s, name, path, pinned);
    if (adapter) {
      if (s.registry.has(name)) {
        // LoRARegistry._register_adapter: cannot happen while the backend refuses the name first.
        return {
          success: false,
          error_message: `LoRA with name ${name} already exists. Loaded LoRAs: ${pyKeys("odict_keys", s.registry.keys())}`,
          loaded_adapters: null,
        };
      }
      s.registry.set(name, adapter);
      s.counters.set(adapter.lora.intId, { count: 0, waiters: [] });
      s.refCache.set(name, { path, pinned });
    }
    const max = s.cfg.maxLoadedLoras;
    if (max !== null) {
      while (s.registry.size > max) {
        const lru = [...s.registry.values()].find((a) => !a.pinned);
        if (!lru) {
          const reg = [...s.registry.values()]
            .map(
              (a) =>
                `('${a.name}', LoRARef(lora_name=${a.name}, lora_path=${a.path}, pinned=${a.pinned ? "True" : "False"}))`,
            )
            .join(", ");
          return {
            success: false,
            error_message: `Didn't find any LoRA adapters when trying to evict LRU LoRA adapter. LoRA registry is: OrderedDict([${reg}])`,
            loaded_adapters: null,
          };
        }
        await unloadLocked(s, lru.name);
        if (out.loaded_adapters) {
          delete out.loaded_adapters[lru.name];
        }
      }
    }
    return out;
  });
}

/** `TokenizerControlMixin.unload_lora_adapter`: the lock, then `_unload_lora_adapter_locked`. */
export function unloadAdapter(s: SglangState, name: string): Promise<LoraUpdateOutput> {
  return withUpdateLock(s, async () => {
    if (!s.cfg.enableLora) {
      return { success: false, error_message: LORA_DISABLED, loaded_adapters: null };
    }
    try {
      return await unloadLocked(s, name);
    } catch (err) {
      return { success: false, error_message: (err as Error).message, loaded_adapters: null };
    }
  });
}

/** A request's hold on an adapter: released once, when the request ends however it ends. */
export interface AdapterLease {
  adapter: SglangAdapter;
  release(): void;
}

/**
 * `_resolve_lora_path` then `LoRARegistry.acquire`, for one adapter name: an adapter unloaded (or
 * LRU-evicted) since it was loaded is loaded again from `lora_ref_cache`; a name never loaded is a
 * ValueError. Throws SGLang's message text; the caller turns it into a 400.
 */
export async function acquireAdapter(s: SglangState, name: string): Promise<AdapterLease> {
  if (!s.cfg.enableLora) {
    throw new Error(
      `LoRA adapter '${name}' was requested, but LoRA is not enabled. Please launch the server with --enable-lora flag and preload adapters using --lora-paths or /load_lora_adapter endpoint.`,
    );
  }
  if (!s.registry.has(name)) {
    const cached = s.refCache.get(name);
    if (!cached) {
      throw new Error(
        `Got LoRA adapter that has never been loaded: ${name}\nAll loaded adapters: ${pyKeys("dict_keys", s.refCache.keys())}.`,
      );
    }
    const res = await loadAdapter(s, name, cached.path, cached.pinned);
    if (!res.success && !(res.error_message ?? "").includes("already loaded")) {
      throw new Error(`Failed to implicitly load LoRA adapter ${name}: ${res.error_message}`);
    }
  }
  const adapter = s.registry.get(name);
  if (!adapter) {
    throw new Error(
      `The following requested LoRA adapters are not loaded: ${name}\nLoaded adapters: ${pyKeys("odict_keys", s.registry.keys())}.`,
    );
  }
  s.registry.delete(name);
  s.registry.set(name, adapter);
  const id = adapter.lora.intId;
  let counter = s.counters.get(id);
  if (!counter) {
    counter = { count: 0, waiters: [] };
    s.counters.set(id, counter);
  }
  counter.count++;
  let released = false;
  return {
    adapter,
    release() {
      if (released) {
        return;
      }
      released = true;
      const c = s.counters.get(id);
      if (!c) {
        return;
      }
      c.count--;
      if (c.count <= 0) {
        c.count = 0;
        for (const w of c.waiters.splice(0)) {
          w();
        }
      }
    },
  };
}
