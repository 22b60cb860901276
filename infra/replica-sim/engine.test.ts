import { afterEach, describe, expect, it } from "vitest";
import type { AdapterCheck } from "./adapter-files.ts";
import {
  Engine,
  type EngineConfig,
  type EngineLora,
  type SamplingParams,
  type StepOutput,
} from "./engine.ts";

const engines: Engine[] = [];
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.stop()));
});

function makeEngine(over: Partial<EngineConfig> = {}, files = new Set<string>(["/a", "/b", "/c", "/d"])) {
  const reads: string[] = [];
  const engine = new Engine({
    maxLoras: 1,
    maxCpuLoras: 2,
    loraEnabled: true,
    maxNumSeqs: 16,
    maxNumBatchedTokens: 2048,
    maxModelLen: 4096,
    kvCacheTokens: 100_000,
    blockSize: 16,
    enablePrefixCaching: true,
    unloadFreesEngine: false,
    maxLoraInfoSeries: Number.POSITIVE_INFINITY,
    fillerTokenIds: [100, 101, 102],
    latency: {
      prefillTokensPerSec: 1_000_000,
      decodeMsPerStep: 1,
      decodeMsPerExtraSeq: 0,
      loadBaseMs: 1,
      loadMsPerMb: 0,
      reloadBaseMs: 1,
      reloadMsPerMb: 0,
      activateMsPerMb: 0,
    },
    readAdapter: async (dir): Promise<AdapterCheck> => {
      reads.push(dir);
      return files.has(dir)
        ? { ok: true, dir, rank: 8, weightsFile: `${dir}/adapter_model.safetensors`, sizeBytes: 1000 }
        : { ok: false, kind: "not_found" };
    },
    ...over,
  });
  engine.start();
  engines.push(engine);
  return { engine, reads, files };
}

let nextId = 0;
function lora(name: string, dir = `/${name}`, loadInplace = false): EngineLora {
  return { name, intId: name.charCodeAt(0), path: dir, dir, loadInplace };
}

const params = (maxTokens: number, over: Partial<SamplingParams> = {}): SamplingParams => ({
  maxTokens,
  minTokens: 0,
  ignoreEos: true,
  eosTokenId: 2,
  naturalTokens: 1_000,
  seed: 1,
  ...over,
});

interface Tracked {
  id: string;
  outputs: StepOutput[];
  firstTokenAt: number | null;
  done: Promise<{ reason: string; at: number }>;
}

function submit(
  engine: Engine,
  l: EngineLora | null,
  maxTokens: number,
  prompt: number[] = [1, 2, 3, 4, 5],
): Tracked {
  const id = `r${nextId++}`;
  const tracked: Partial<Tracked> = { id, outputs: [], firstTokenAt: null };
  tracked.done = new Promise((resolve) => {
    engine.addRequest({
      id,
      lora: l,
      promptTokenIds: prompt,
      params: params(maxTokens),
      listener: {
        onOutput(out) {
          tracked.outputs?.push(out);
          tracked.firstTokenAt ??= performance.now();
          if (out.finishReason) {
            resolve({ reason: out.finishReason, at: performance.now() });
          }
        },
        onError() {
          resolve({ reason: "dead", at: performance.now() });
        },
      },
    });
  });
  return tracked as Tracked;
}

const until = async (cond: () => boolean, ms = 2_000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) {
      throw new Error("condition not met in time");
    }
    await new Promise((r) => setTimeout(r, 1));
  }
};

describe("engine scheduling", () => {
  it("defers a second adapter while the only slot is busy, and lets base requests through", async () => {
    const { engine } = makeEngine();
    const a = lora("a");
    const b = lora("b");
    expect(await engine.addLora(a)).toEqual({ ok: true });
    expect(await engine.addLora(b)).toEqual({ ok: true });
    const ra = submit(engine, a, 60);
    await until(() => ra.outputs.length > 0);
    const rb = submit(engine, b, 1);
    const base = submit(engine, null, 1);
    await until(() => engine.snapshot().waiting.length === 1 && base.outputs.length > 0);
    expect(engine.snapshot().waiting).toEqual([{ id: rb.id, lora: "b", reason: "deferred" }]);
    expect(engine.waitingByReason()).toEqual({ capacity: 0, deferred: 1 });
    const [da, db] = await Promise.all([ra.done, rb.done]);
    expect(db.at).toBeGreaterThanOrEqual(da.at);
    expect(db.reason).toBe("length");
  });

  it("gives a deferred adapter no aging: later requests for the running adapter overtake it", async () => {
    const { engine } = makeEngine();
    const a = lora("a");
    const b = lora("b");
    await engine.addLora(a);
    await engine.addLora(b);
    const a1 = submit(engine, a, 40);
    await until(() => a1.outputs.length > 0);
    const b1 = submit(engine, b, 1);
    const a2 = submit(engine, a, 40);
    const [, db, da2] = await Promise.all([a1.done, b1.done, a2.done]);
    expect(a2.firstTokenAt).not.toBeNull();
    expect(b1.firstTokenAt ?? 0).toBeGreaterThan(a2.firstTokenAt ?? Number.POSITIVE_INFINITY);
    expect(db.at).toBeGreaterThanOrEqual(da2.at);
  });

  it("holds requests beyond max_num_seqs as capacity waits", async () => {
    const { engine } = makeEngine({ maxNumSeqs: 2 });
    const rs = [submit(engine, null, 30), submit(engine, null, 30), submit(engine, null, 1)];
    await until(() => (rs[0]?.outputs.length ?? 0) > 0);
    expect(engine.waitingByReason()).toEqual({ capacity: 1, deferred: 0 });
    expect(engine.numRunning()).toBe(2);
    await Promise.all(rs.map((r) => r.done));
  });

  it("preempts the newest request when KV blocks run out and still finishes everything", async () => {
    const { engine } = makeEngine({ kvCacheTokens: 64 });
    const rs = [submit(engine, null, 30, Array(16).fill(7)), submit(engine, null, 30, Array(16).fill(8))];
    const done = await Promise.all(rs.map((r) => r.done));
    expect(done.map((d) => d.reason)).toEqual(["length", "length"]);
    expect(engine.counters.preemptions).toBeGreaterThan(0);
    expect(rs.map((r) => r.outputs.flatMap((o) => o.newTokenIds).length)).toEqual([30, 30]);
  });

  it("stops naturally with EOS unless ignore_eos, and counts the EOS as a completion token", async () => {
    const { engine } = makeEngine();
    const out: StepOutput[] = [];
    const done = new Promise<void>((resolve) => {
      engine.addRequest({
        id: "natural",
        lora: null,
        promptTokenIds: [1, 2, 3],
        params: params(50, { ignoreEos: false, naturalTokens: 5 }),
        listener: {
          onOutput(o) {
            out.push(o);
            if (o.finishReason) {
              resolve();
            }
          },
          onError() {},
        },
      });
    });
    await done;
    const ids = out.flatMap((o) => o.newTokenIds);
    expect(ids).toHaveLength(5);
    expect(ids.at(-1)).toBe(2);
    expect(out.at(-1)?.finishReason).toBe("stop");
  });

  it("serves a repeated prompt from the prefix cache, per adapter", async () => {
    const { engine } = makeEngine();
    const prompt = Array.from({ length: 50 }, (_, i) => i + 10);
    const first = submit(engine, null, 1, prompt);
    await first.done;
    const second = submit(engine, null, 1, prompt);
    await second.done;
    expect(first.outputs[0]?.numCachedTokens).toBe(0);
    expect(second.outputs[0]?.numCachedTokens).toBe(48);
    const a = lora("a");
    await engine.addLora(a);
    const third = submit(engine, a, 1, prompt);
    await third.done;
    expect(third.outputs[0]?.numCachedTokens).toBe(0);
  });

  it("drops an aborted request and counts it", async () => {
    const { engine } = makeEngine();
    const r = submit(engine, null, 1_000);
    await until(() => r.outputs.length > 0);
    expect(engine.abort(r.id)).toBe(true);
    expect(engine.abort(r.id)).toBe(false);
    expect(engine.numRunning()).toBe(0);
    expect(engine.counters.finished.abort).toBe(1);
  });
});

describe("engine LoRA caches", () => {
  it("evicts the least recently used adapter from the CPU cache and reloads it from disk on use", async () => {
    const { engine, reads } = makeEngine();
    const [a, b, c] = [lora("a"), lora("b"), lora("c")];
    for (const l of [a, b, c]) {
      await engine.addLora(l);
    }
    expect(engine.snapshot().cpuCache).toEqual(["b", "c"]);
    expect(engine.snapshot().gpuSlots).toEqual(["c"]);
    reads.length = 0;
    await submit(engine, a, 1).done;
    expect(reads).toEqual(["/a"]);
    expect(engine.snapshot().cpuCache).toEqual(["c", "a"]);
    reads.length = 0;
    await submit(engine, a, 1).done;
    expect(reads).toEqual([]);
  });

  it("dies when an evicted adapter's files are gone: every request fails and new ones are refused", async () => {
    const { engine, files } = makeEngine();
    const [a, b, c] = [lora("a"), lora("b"), lora("c")];
    for (const l of [a, b, c]) {
      await engine.addLora(l);
    }
    const bystander = submit(engine, null, 10_000);
    await until(() => bystander.outputs.length > 0);
    files.delete("/a");
    const doomed = submit(engine, a, 1);
    expect((await doomed.done).reason).toBe("dead");
    expect((await bystander.done).reason).toBe("dead");
    expect(engine.dead).toBe(true);
    expect(() =>
      engine.addRequest({
        id: "late",
        lora: null,
        promptTokenIds: [1],
        params: params(1),
        listener: { onOutput() {}, onError() {} },
      }),
    ).toThrow(/EngineCore encountered an issue/);
    expect(await engine.addLora(lora("d"))).toMatchObject({ ok: false, kind: "dead" });
  });

  it("keeps unloaded adapters in the caches unless the frontend really removes them", async () => {
    const kept = makeEngine().engine;
    await kept.addLora(lora("a"));
    await kept.removeLora(lora("a").intId);
    expect(kept.snapshot().cpuCache).toEqual(["a"]);
    const freed = makeEngine({ unloadFreesEngine: true }).engine;
    await freed.addLora(lora("a"));
    await freed.removeLora(lora("a").intId);
    expect(freed.snapshot().cpuCache).toEqual([]);
  });

  it("reloads a load_inplace adapter from disk for every new generation", async () => {
    const { engine, reads } = makeEngine();
    const a = lora("a", "/a", true);
    await engine.addLora(a);
    reads.length = 0;
    await submit(engine, a, 2).done;
    await submit(engine, a, 2).done;
    expect(reads).toEqual(["/a", "/a"]);
  });

  it("reports a missing adapter as not_found and a disabled LoRA engine as invalid", async () => {
    const { engine } = makeEngine();
    expect(await engine.addLora(lora("z", "/nowhere"))).toEqual({ ok: false, kind: "not_found" });
    const off = makeEngine({ loraEnabled: false }).engine;
    expect(await off.addLora(lora("a"))).toMatchObject({ ok: false, kind: "invalid" });
  });

  it("pauses every running stream while a load runs inside the loop", async () => {
    const { engine } = makeEngine({
      latency: {
        prefillTokensPerSec: 1_000_000,
        decodeMsPerStep: 1,
        decodeMsPerExtraSeq: 0,
        loadBaseMs: 120,
        loadMsPerMb: 0,
        reloadBaseMs: 1,
        reloadMsPerMb: 0,
        activateMsPerMb: 0,
      },
    });
    const r = submit(engine, null, 400);
    await until(() => r.outputs.length > 5);
    const before = r.outputs.length;
    const t0 = performance.now();
    await engine.addLora(lora("a"));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(110);
    const after = r.outputs.length;
    engine.abort(r.id);
    expect(after - before).toBeLessThanOrEqual(2);
  });
});
