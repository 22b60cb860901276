import { performance } from "node:perf_hooks";
import { setImmediate as nextTurn, setTimeout as sleep } from "node:timers/promises";
import type { AdapterCheck } from "./adapter-files.ts";
import { buckets125, Histogram, ITL_BUCKETS, REQUEST_LATENCY_BUCKETS, TTFT_BUCKETS } from "./metrics.ts";

/**
 * The simulated V1 engine core: a single loop that runs utility calls (adapter loads) between
 * model steps, schedules like vLLM's V1 scheduler (running first, then FCFS waiting, LoRA-deferred
 * requests skipped without aging), keeps the two LoRA caches (GPU slots and the CPU LRU) and
 * charges each step its simulated GPU time. It knows nothing about HTTP.
 */

export interface LatencyModel {
  /** Prompt tokens the GPU prefills per second. */
  prefillTokensPerSec: number;
  /** Time of one forward step with a single running sequence. */
  decodeMsPerStep: number;
  /** Added to each step for every running sequence beyond the first. */
  decodeMsPerExtraSeq: number;
  /** Fixed part of `load_lora_adapter` (read, validate, CPU cache, GPU activate). */
  loadBaseMs: number;
  loadMsPerMb: number;
  /** Fixed part of the in-step reload of an adapter evicted from the CPU LRU. */
  reloadBaseMs: number;
  reloadMsPerMb: number;
  /** Host-to-GPU copy of a CPU-cached adapter into a free GPU slot. */
  activateMsPerMb: number;
}

/** Roughly an NVIDIA L4 (24 GB, 300 GB/s) serving Llama-3.1-8B-Instruct-AWQ. */
export const L4_LATENCY: Readonly<LatencyModel> = {
  prefillTokensPerSec: 3000,
  decodeMsPerStep: 22,
  decodeMsPerExtraSeq: 0.35,
  loadBaseMs: 60,
  loadMsPerMb: 3,
  reloadBaseMs: 40,
  reloadMsPerMb: 3,
  activateMsPerMb: 0.1,
};

/**
 * Near-instant engine (loads 20 ms, steps 2 ms): what the e2e world and bench/scheduler-system run,
 * so that hundreds of requests and loads take seconds.
 */
export const FAST_LATENCY: Readonly<LatencyModel> = {
  prefillTokensPerSec: 1_000_000,
  decodeMsPerStep: 2,
  decodeMsPerExtraSeq: 0,
  loadBaseMs: 20,
  loadMsPerMb: 0,
  reloadBaseMs: 5,
  reloadMsPerMb: 0,
  activateMsPerMb: 0,
};

export interface EngineConfig {
  maxLoras: number;
  maxCpuLoras: number;
  loraEnabled: boolean;
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
  maxModelLen: number;
  kvCacheTokens: number;
  blockSize: number;
  enablePrefixCaching: boolean;
  /** vLLM keeps unloaded adapters in its caches; the Rust frontend really removes them. */
  unloadFreesEngine: boolean;
  /** `vllm:lora_requests_info` series kept (vLLM: every set it ever saw, without bound). */
  maxLoraInfoSeries: number;
  /**
   * How `vllm:lora_requests_info` fills its adapter labels: `"same"` (since 2025-11) lists every
   * busy adapter in both, `"split"` (v0.11) lists scheduled and queued adapters apart. Default "same".
   */
  loraInfoLabels?: "split" | "same";
  latency: LatencyModel;
  /** Single-token words the model "generates". */
  fillerTokenIds: readonly number[];
  /** Reads the adapter from disk as the worker would (used for loads and in-step reloads). */
  readAdapter: (dir: string) => Promise<AdapterCheck>;
}

export interface EngineLora {
  name: string;
  intId: number;
  /** The lora_path as sent. */
  path: string;
  /** What vLLM resolved it to. */
  dir: string;
  loadInplace: boolean;
}

export interface SamplingParams {
  maxTokens: number;
  minTokens: number;
  ignoreEos: boolean;
  /** Token that ends generation naturally (`<|eot_id|>` for chat). */
  eosTokenId: number;
  /** Tokens (the EOS included) the "model" would emit before stopping by itself. */
  naturalTokens: number;
  seed: number;
}

export type FinishReason = "stop" | "length";

export interface StepOutput {
  /** Tokens produced by this step for this request (one, or none for a partial prefill). */
  newTokenIds: number[];
  finishReason: FinishReason | null;
  /** Prompt tokens served from the prefix cache, known from the first output on. */
  numCachedTokens: number;
}

export interface EngineListener {
  onOutput(out: StepOutput): void;
  onError(err: EngineDeadError): void;
}

export interface AddRequest {
  id: string;
  lora: EngineLora | null;
  promptTokenIds: readonly number[];
  params: SamplingParams;
  listener: EngineListener;
}

export class EngineDeadError extends Error {
  constructor() {
    super("EngineCore encountered an issue. See stack trace (above) for the root cause.");
    this.name = "EngineDeadError";
  }
}

export type AddLoraResult =
  | { ok: true }
  | { ok: false; kind: "not_found" }
  | { ok: false; kind: "invalid"; message: string }
  | { ok: false; kind: "dead"; message: string };

interface Req {
  id: string;
  lora: EngineLora | null;
  prompt: readonly number[];
  output: number[];
  params: SamplingParams;
  listener: EngineListener;
  blockHashes: string[];
  numComputed: number;
  numCached: number;
  blocks: number;
  arrivedAt: number;
  firstScheduledAt: number | null;
  firstTokenAt: number | null;
  lastTokenAt: number | null;
  /** Set when admitted for a fresh generation (used by the load_inplace reload bug). */
  admittedThisStep: boolean;
  done: boolean;
  rng: () => number;
}

interface Scheduled {
  req: Req;
  tokens: number;
}

export interface EngineCounters {
  promptTokens: number;
  generationTokens: number;
  promptTokensCached: number;
  prefixCacheQueries: number;
  prefixCacheHits: number;
  preemptions: number;
  finished: Record<"stop" | "length" | "abort" | "error" | "repetition", number>;
}

export interface EngineHistograms {
  ttft: Histogram;
  itl: Histogram;
  e2e: Histogram;
  queue: Histogram;
  promptTokens: Histogram;
  generationTokens: Histogram;
}

export interface EngineSnapshot {
  dead: boolean;
  running: { id: string; lora: string | null }[];
  waiting: { id: string; lora: string | null; reason: "capacity" | "deferred" }[];
  /** Adapter names in the CPU LRU, least recently used first. */
  cpuCache: string[];
  /** Adapter names in GPU slots, least recently used first. */
  gpuSlots: string[];
  kvCacheUsage: number;
  loadsQueued: number;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a over 32-bit words, seeded: chains block hashes the way vLLM chains its block keys. */
function hashBlock(parent: number, tokens: readonly number[], from: number, to: number): number {
  let h = parent ^ 0x811c9dc5;
  for (let i = from; i < to; i++) {
    h = Math.imul(h ^ (tokens[i] ?? 0), 0x01000193);
  }
  return h >>> 0;
}

function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  }
  return h >>> 0;
}

/** `vllm:lora_requests_info` series key: one series per (running, waiting) label pair. */
function loraSeriesKey(running: string, waiting: string): string {
  return `${running}|${waiting}`;
}

/** Insertion-ordered map used as an LRU: first key is the least recently used. */
class Lru<V> {
  readonly map = new Map<number, V>();
  has(k: number): boolean {
    return this.map.has(k);
  }
  touch(k: number): void {
    const v = this.map.get(k);
    if (v !== undefined) {
      this.map.delete(k);
      this.map.set(k, v);
    }
  }
  set(k: number, v: V): void {
    this.map.delete(k);
    this.map.set(k, v);
  }
  delete(k: number): boolean {
    return this.map.delete(k);
  }
  get size(): number {
    return this.map.size;
  }
  oldest(skip: (k: number) => boolean = () => false): number | undefined {
    for (const k of this.map.keys()) {
      if (!skip(k)) {
        return k;
      }
    }
    return undefined;
  }
  values(): V[] {
    return [...this.map.values()];
  }
}

export class Engine {
  readonly config: EngineConfig;
  readonly counters: EngineCounters = {
    promptTokens: 0,
    generationTokens: 0,
    promptTokensCached: 0,
    prefixCacheQueries: 0,
    prefixCacheHits: 0,
    preemptions: 0,
    finished: { stop: 0, length: 0, abort: 0, error: 0, repetition: 0 },
  };
  readonly histograms: EngineHistograms;
  /** `vllm:lora_requests_info` series: label pair key → last time (unix seconds) it was current. */
  readonly loraInfoSeries = new Map<string, { running: string; waiting: string; value: number }>();

  private readonly waiting: Req[] = [];
  private readonly running: Req[] = [];
  private readonly byId = new Map<string, Req>();
  private readonly cpu = new Lru<EngineLora>();
  private readonly gpu = new Lru<EngineLora>();
  private readonly prefixCache = new Map<string, true>();
  /** Weights size per adapter id, learnt when the engine reads it. */
  private readonly sizes = new Map<number, number>();
  private readonly utilities: (() => Promise<void>)[] = [];
  private readonly totalBlocks: number;
  private wake: (() => void) | null = null;
  private clock = Number.NEGATIVE_INFINITY;
  private stopped = false;
  private deadFlag = false;
  private loopDone: Promise<void> | null = null;

  constructor(config: EngineConfig) {
    this.config = config;
    this.totalBlocks = Math.max(1, Math.floor(config.kvCacheTokens / config.blockSize));
    this.histograms = {
      ttft: new Histogram(TTFT_BUCKETS),
      itl: new Histogram(ITL_BUCKETS),
      e2e: new Histogram(REQUEST_LATENCY_BUCKETS),
      queue: new Histogram(REQUEST_LATENCY_BUCKETS),
      promptTokens: new Histogram(buckets125(config.maxModelLen)),
      generationTokens: new Histogram(buckets125(config.maxModelLen)),
    };
  }

  get dead(): boolean {
    return this.deadFlag;
  }

  start(): void {
    this.loopDone ??= this.loop();
  }

  /** Stops the loop; requests still in flight fail as if the engine had died. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.notify();
    await this.loopDone;
    this.die();
  }

  /** Queues a request; throws EngineDeadError when the engine is dead. */
  addRequest(init: AddRequest): void {
    if (this.deadFlag) {
      throw new EngineDeadError();
    }
    if (this.byId.has(init.id)) {
      throw new Error(`request id ${init.id} is already in flight`);
    }
    const bs = this.config.blockSize;
    const salt = hashString(init.lora ? `lora:${init.lora.name}` : "base");
    const blockHashes: string[] = [];
    let parent = salt;
    for (let end = bs; end <= init.promptTokenIds.length; end += bs) {
      parent = hashBlock(parent, init.promptTokenIds, end - bs, end);
      blockHashes.push(`${salt}:${end}:${parent}`);
    }
    const req: Req = {
      id: init.id,
      lora: init.lora,
      prompt: init.promptTokenIds,
      output: [],
      params: init.params,
      listener: init.listener,
      blockHashes,
      numComputed: 0,
      numCached: 0,
      blocks: 0,
      arrivedAt: performance.now(),
      firstScheduledAt: null,
      firstTokenAt: null,
      lastTokenAt: null,
      admittedThisStep: false,
      done: false,
      rng: mulberry32(init.params.seed),
    };
    this.byId.set(req.id, req);
    this.waiting.push(req);
    this.notify();
  }

  /** Client went away: drop the request wherever it is. Returns false when it had already finished. */
  abort(id: string): boolean {
    const req = this.byId.get(id);
    if (!req || req.done) {
      return false;
    }
    this.finish(req, "abort");
    return true;
  }

  /** `add_lora`: runs inside the engine loop, so every stream pauses while it reads and copies. */
  addLora(lora: EngineLora): Promise<AddLoraResult> {
    return this.utility(async () => {
      if (!this.config.loraEnabled) {
        return {
          ok: false,
          kind: "invalid",
          message: "LoRA is not enabled. Use --enable-lora to enable LoRA.",
        };
      }
      if (this.cpu.has(lora.intId) && !lora.loadInplace) {
        this.cpu.touch(lora.intId);
        this.activate(lora, new Set());
        return { ok: true };
      }
      const check = await this.config.readAdapter(lora.dir);
      if (!check.ok) {
        return check.kind === "not_found" ? { ok: false, kind: "not_found" } : check;
      }
      this.sizes.set(lora.intId, check.sizeBytes);
      const mb = check.sizeBytes / 1e6;
      const { loadBaseMs, loadMsPerMb, activateMsPerMb } = this.config.latency;
      await sleep(loadBaseMs + loadMsPerMb * mb + activateMsPerMb * mb);
      if (!this.cpu.has(lora.intId) && this.cpu.size >= this.config.maxCpuLoras) {
        const victim = this.cpu.oldest();
        if (victim !== undefined) {
          this.evictCpu(victim);
        }
      }
      this.cpu.set(lora.intId, lora);
      this.gpu.delete(lora.intId);
      this.activate(lora, new Set());
      return { ok: true };
    });
  }

  /** `remove_lora`: a no-op on the Python frontend (the weights stay until LRU eviction). */
  removeLora(intId: number): Promise<void> {
    return this.utility(async () => {
      if (this.config.unloadFreesEngine) {
        this.evictCpu(intId);
      }
    }).then(() => undefined);
  }

  snapshot(): EngineSnapshot {
    const deferredSet = this.runningLoraIds();
    return {
      dead: this.deadFlag,
      running: this.running.map((r) => ({ id: r.id, lora: r.lora?.name ?? null })),
      waiting: this.waiting.map((r) => ({
        id: r.id,
        lora: r.lora?.name ?? null,
        reason: this.isDeferred(r, deferredSet) ? "deferred" : "capacity",
      })),
      cpuCache: this.cpu.values().map((l) => l.name),
      gpuSlots: this.gpu.values().map((l) => l.name),
      kvCacheUsage: this.kvUsage(),
      loadsQueued: this.utilities.length,
    };
  }

  waitingByReason(): { capacity: number; deferred: number } {
    const loras = this.runningLoraIds();
    let deferred = 0;
    for (const r of this.waiting) {
      if (this.isDeferred(r, loras)) {
        deferred++;
      }
    }
    return { capacity: this.waiting.length - deferred, deferred };
  }

  numRunning(): number {
    return this.running.length;
  }

  numWaiting(): number {
    return this.waiting.length;
  }

  kvUsage(): number {
    let used = 0;
    for (const r of this.running) {
      used += r.blocks;
    }
    return used / this.totalBlocks;
  }

  get numGpuBlocks(): number {
    return this.totalBlocks;
  }

  // ---- loop ----------------------------------------------------------------------------------

  private utility<T>(fn: () => Promise<T>): Promise<T | AddLoraResult> {
    return new Promise((resolveCall) => {
      this.utilities.push(async () => {
        if (this.deadFlag) {
          resolveCall({ ok: false, kind: "dead", message: new EngineDeadError().message });
          return;
        }
        resolveCall(await fn());
      });
      this.notify();
    });
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private idle(): Promise<void> {
    this.clock = Number.NEGATIVE_INFINITY;
    return new Promise((r) => {
      this.wake = r;
    });
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const util = this.utilities.shift();
      if (util) {
        await util();
        this.clock = Math.max(this.clock, performance.now());
        continue;
      }
      if (this.deadFlag || (this.running.length === 0 && this.waiting.length === 0)) {
        await this.idle();
        continue;
      }
      try {
        await this.step();
      } catch (err) {
        process.stderr.write(`replica-sim engine step failed: ${String(err)}\n`);
        this.die();
      }
    }
    this.notify();
  }

  /** Sleeps for a step's simulated GPU time, catching up on timer lateness (up to 50 ms). */
  private async spend(ms: number): Promise<void> {
    const now = performance.now();
    this.clock = (this.clock < now - 50 ? now : this.clock) + ms;
    const delay = this.clock - now;
    if (delay >= 1) {
      await sleep(delay);
    } else {
      await nextTurn();
    }
  }

  private async step(): Promise<void> {
    for (const r of this.running) {
      r.admittedThisStep = false;
    }
    const scheduled = this.schedule();
    if (scheduled.length === 0) {
      // Nothing fits (a prompt larger than the KV cache): wait for an abort or a new request.
      await this.idle();
      return;
    }
    const batch = new Map<number, { lora: EngineLora; fresh: boolean }>();
    for (const s of scheduled) {
      const l = s.req.lora;
      if (l) {
        const entry = batch.get(l.intId) ?? { lora: l, fresh: false };
        entry.fresh ||= s.req.admittedThisStep;
        batch.set(l.intId, entry);
      }
    }
    const { latency } = this.config;
    let stallMs = 0;
    const batchIds = new Set(batch.keys());
    for (const { lora, fresh } of batch.values()) {
      // An evicted adapter (or, with the load_inplace bug, any new generation) reloads from disk here.
      if (!this.cpu.has(lora.intId) || (lora.loadInplace && fresh)) {
        const check = await this.config.readAdapter(lora.dir);
        if (!check.ok) {
          this.die();
          return;
        }
        this.sizes.set(lora.intId, check.sizeBytes);
        stallMs += latency.reloadBaseMs + latency.reloadMsPerMb * (check.sizeBytes / 1e6);
        if (!this.cpu.has(lora.intId) && this.cpu.size >= this.config.maxCpuLoras) {
          const victim = this.cpu.oldest((k) => batchIds.has(k));
          if (victim !== undefined) {
            this.evictCpu(victim);
          }
        }
        this.cpu.set(lora.intId, lora);
        this.gpu.delete(lora.intId);
      }
      this.cpu.touch(lora.intId);
      stallMs += this.activate(lora, batchIds);
    }
    let prefillTokens = 0;
    for (const s of scheduled) {
      if (s.tokens > 1 || s.req.numComputed < s.req.prompt.length) {
        prefillTokens += s.tokens;
      }
    }
    const seqs = this.running.length;
    const stepMs =
      stallMs +
      latency.decodeMsPerStep +
      latency.decodeMsPerExtraSeq * Math.max(0, seqs - 1) +
      (prefillTokens * 1000) / latency.prefillTokensPerSec;
    await this.spend(stepMs);
    if (this.deadFlag) {
      return;
    }
    this.applyStep(scheduled);
    this.recordLoraInfo();
  }

  /** Puts an adapter in a GPU slot, evicting the least recently used slot not needed by the batch. */
  private activate(lora: EngineLora, batchIds: ReadonlySet<number>): number {
    if (this.gpu.has(lora.intId)) {
      this.gpu.touch(lora.intId);
      return 0;
    }
    if (this.gpu.size >= this.config.maxLoras) {
      const victim = this.gpu.oldest((k) => batchIds.has(k) && k !== lora.intId);
      if (victim !== undefined) {
        this.gpu.delete(victim);
      }
    }
    this.gpu.set(lora.intId, lora);
    return (this.config.latency.activateMsPerMb * (this.sizes.get(lora.intId) ?? 0)) / 1e6;
  }

  private evictCpu(intId: number): void {
    this.cpu.delete(intId);
    this.gpu.delete(intId);
  }

  private runningLoraIds(): Set<number> {
    const ids = new Set<number>();
    for (const r of this.running) {
      if (r.lora) {
        ids.add(r.lora.intId);
      }
    }
    return ids;
  }

  private isDeferred(r: Req, runningLoras: ReadonlySet<number>): boolean {
    return r.lora !== null && !runningLoras.has(r.lora.intId) && runningLoras.size >= this.config.maxLoras;
  }

  private freeBlocks(): number {
    let used = 0;
    for (const r of this.running) {
      used += r.blocks;
    }
    return this.totalBlocks - used;
  }

  private blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.config.blockSize);
  }

  private schedule(): Scheduled[] {
    const now = performance.now();
    const out: Scheduled[] = [];
    let budget = this.config.maxNumBatchedTokens;
    let preempted = false;
    for (let i = 0; i < this.running.length && budget > 0; ) {
      const r = this.running[i];
      if (!r) {
        break;
      }
      const need = r.prompt.length + r.output.length - r.numComputed;
      const n = Math.min(need, budget);
      const extra = this.blocksFor(r.numComputed + n) - r.blocks;
      if (extra > this.freeBlocks()) {
        // Out of KV blocks: preempt the newest running request (recompute later), like vLLM.
        const victim = this.running.pop();
        if (victim) {
          this.preempt(victim);
          preempted = true;
        }
        continue;
      }
      r.blocks += extra;
      out.push({ req: r, tokens: n });
      budget -= n;
      i++;
    }
    if (preempted) {
      return out;
    }
    const loras = this.runningLoraIds();
    const skipped: Req[] = [];
    while (this.waiting.length > 0 && budget > 0) {
      if (this.running.length >= this.config.maxNumSeqs) {
        break;
      }
      const r = this.waiting[0];
      if (!r) {
        break;
      }
      if (r.lora && !loras.has(r.lora.intId) && loras.size >= this.config.maxLoras) {
        this.waiting.shift();
        skipped.push(r);
        continue;
      }
      const total = r.prompt.length + r.output.length;
      const fresh = r.output.length === 0 && r.firstScheduledAt === null;
      const cached = this.config.enablePrefixCaching ? this.lookupPrefix(r, total) : 0;
      const n = Math.min(total - cached, budget);
      const blocks = this.blocksFor(cached + n);
      if (blocks > this.freeBlocks()) {
        break;
      }
      this.waiting.shift();
      r.numComputed = cached;
      r.blocks = blocks;
      if (fresh) {
        r.numCached = cached;
        this.counters.prefixCacheQueries += r.prompt.length;
        this.counters.prefixCacheHits += cached;
      }
      r.firstScheduledAt ??= now;
      r.admittedThisStep = true;
      this.running.push(r);
      if (r.lora) {
        loras.add(r.lora.intId);
      }
      out.push({ req: r, tokens: n });
      budget -= n;
    }
    this.waiting.unshift(...skipped);
    return out;
  }

  private lookupPrefix(r: Req, total: number): number {
    // At least one token is always computed, so a full hit stops one block short.
    const maxBlocks = Math.floor((total - 1) / this.config.blockSize);
    let hit = 0;
    for (let i = 0; i < Math.min(maxBlocks, r.blockHashes.length); i++) {
      const key = r.blockHashes[i];
      if (key === undefined || !this.prefixCache.has(key)) {
        break;
      }
      this.prefixCache.delete(key);
      this.prefixCache.set(key, true);
      hit++;
    }
    return hit * this.config.blockSize;
  }

  private cachePrefix(r: Req): void {
    if (!this.config.enablePrefixCaching) {
      return;
    }
    const full = Math.floor(Math.min(r.numComputed, r.prompt.length) / this.config.blockSize);
    for (let i = 0; i < Math.min(full, r.blockHashes.length); i++) {
      const key = r.blockHashes[i];
      if (key !== undefined) {
        this.prefixCache.delete(key);
        this.prefixCache.set(key, true);
      }
    }
    while (this.prefixCache.size > this.totalBlocks) {
      const oldest = this.prefixCache.keys().next().value;
      if (oldest === undefined) {
        break;
      }
      this.prefixCache.delete(oldest);
    }
  }

  private preempt(r: Req): void {
    this.cachePrefix(r);
    r.numComputed = 0;
    r.blocks = 0;
    this.counters.preemptions++;
    this.waiting.unshift(r);
  }

  private sample(r: Req): number {
    const p = r.params;
    const n = r.output.length + 1;
    if (!p.ignoreEos && n >= p.naturalTokens && n > p.minTokens) {
      return p.eosTokenId;
    }
    const vocab = this.config.fillerTokenIds;
    return vocab[Math.floor(r.rng() * vocab.length)] ?? p.eosTokenId;
  }

  private applyStep(scheduled: readonly Scheduled[]): void {
    const now = performance.now();
    for (const { req: r, tokens } of scheduled) {
      if (r.done) {
        continue;
      }
      const wasPrefilling = r.numComputed < r.prompt.length;
      r.numComputed += tokens;
      if (wasPrefilling && r.numComputed >= r.prompt.length) {
        this.cachePrefix(r);
      }
      if (r.numComputed < r.prompt.length + r.output.length) {
        continue;
      }
      const tok = this.sample(r);
      r.output.push(tok);
      this.counters.generationTokens++;
      if (r.firstTokenAt === null) {
        r.firstTokenAt = now;
        this.counters.promptTokens += r.prompt.length;
        this.counters.promptTokensCached += r.numCached;
        this.histograms.ttft.observe((now - r.arrivedAt) / 1000);
      } else if (r.lastTokenAt !== null) {
        this.histograms.itl.observe((now - r.lastTokenAt) / 1000);
      }
      r.lastTokenAt = now;
      let finish: FinishReason | null = null;
      if (tok === r.params.eosTokenId && !r.params.ignoreEos) {
        finish = "stop";
      } else if (r.output.length >= r.params.maxTokens) {
        finish = "length";
      }
      if (finish) {
        this.finish(r, finish);
      }
      r.listener.onOutput({ newTokenIds: [tok], finishReason: finish, numCachedTokens: r.numCached });
    }
  }

  private finish(r: Req, reason: FinishReason | "abort"): void {
    r.done = true;
    this.byId.delete(r.id);
    const ri = this.running.indexOf(r);
    if (ri >= 0) {
      this.running.splice(ri, 1);
    }
    const wi = this.waiting.indexOf(r);
    if (wi >= 0) {
      this.waiting.splice(wi, 1);
    }
    r.blocks = 0;
    this.counters.finished[reason]++;
    const now = performance.now();
    this.histograms.e2e.observe((now - r.arrivedAt) / 1000);
    if (r.firstScheduledAt !== null) {
      this.histograms.queue.observe((r.firstScheduledAt - r.arrivedAt) / 1000);
    }
    this.histograms.promptTokens.observe(r.prompt.length);
    this.histograms.generationTokens.observe(r.output.length);
    if (reason === "abort") {
      this.recordLoraInfo();
    }
  }

  /**
   * Test hook: `count` adapter sets current long ago, as a vLLM that has run for days accumulates
   * them (each an adapter name never seen since), older than any series this engine records.
   */
  addStaleLoraSeries(count: number): void {
    const before = [...this.loraInfoSeries];
    this.loraInfoSeries.clear();
    const longAgo = Date.now() / 1000 - 86_400;
    for (let i = 0; i < count; i++) {
      const list = `stale-${i}-adapter,stale-${i}-other`;
      this.loraInfoSeries.set(loraSeriesKey(list, list), {
        running: list,
        waiting: list,
        value: longAgo + i / count,
      });
    }
    for (const [key, series] of before) {
      this.loraInfoSeries.set(key, series);
    }
  }

  /**
   * One `vllm:lora_requests_info` update, as vLLM makes one per engine step.
   * - Since PR #26801 (2025-11), `LoRARequestStates.update_scheduler_stats` writes
   *   `waiting_lora_adapters[lora_name] = len(stats.waiting)` and `running_lora_adapters[lora_name] =
   *   len(stats.running)` for every adapter with any request, so both labels list the same set.
   * - v0.11 (vllm/v1/metrics/stats.py @ 28ed1fb8, `update_iteration_stats`) adds an adapter to
   *   `waiting_lora_adapters` only `if stats.waiting_requests` and to `running_lora_adapters` only
   *   `if stats.running_requests`: a request counts as running from its first SCHEDULED event
   *   (back to waiting when preempted), so a deferred adapter shows in waiting only.
   */
  private recordLoraInfo(): void {
    if (!this.config.loraEnabled) {
      return;
    }
    const namesOf = (reqs: readonly Req[]): string[] => {
      const names: string[] = [];
      for (const r of reqs) {
        if (r.lora && !names.includes(r.lora.name)) {
          names.push(r.lora.name);
        }
      }
      return names;
    };
    let running: string;
    let waiting: string;
    if (this.config.loraInfoLabels === "split") {
      running = namesOf(this.running).join(",");
      waiting = namesOf(this.waiting).join(",");
    } else {
      running = namesOf([...this.running, ...this.waiting]).join(",");
      waiting = running;
    }
    const key = loraSeriesKey(running, waiting);
    this.loraInfoSeries.delete(key);
    this.loraInfoSeries.set(key, { running, waiting, value: Date.now() / 1000 });
    // vLLM keeps every label combination forever (a Prometheus gauge's children are never removed);
    // a configured bound drops the stalest. The newest series (the one readers use) is never dropped.
    while (this.loraInfoSeries.size > this.config.maxLoraInfoSeries) {
      const stalest = this.loraInfoSeries.keys().next().value;
      if (stalest === undefined) {
        break;
      }
      this.loraInfoSeries.delete(stalest);
    }
  }

  private die(): void {
    if (this.deadFlag) {
      return;
    }
    this.deadFlag = true;
    const victims = [...this.running, ...this.waiting];
    this.running.length = 0;
    this.waiting.length = 0;
    for (const r of victims) {
      r.done = true;
      this.byId.delete(r.id);
      this.counters.finished.error++;
      r.listener.onError(new EngineDeadError());
    }
  }
}
