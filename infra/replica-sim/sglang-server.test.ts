import { afterAll, afterEach, describe, expect, it } from "vitest";
import {
  removeAdapterRoot,
  sleep,
  stream,
  uniqueName,
  waitFor,
  writeAdapter,
} from "../../test/conformance/harness.ts";
import { parseCli } from "./cli.ts";
import { createReplicaSim } from "./create.ts";
import type { RunningReplicaSim } from "./server.ts";
import type { SglangReplicaSim } from "./sglang-server.ts";

// The SGLang mode's own invariants, beyond test/conformance/sglang-conformance.test.ts: the
// per-batch adapter cap, the update lock behind a draining unload, LRU eviction that waits for the
// evicted adapter's requests, pinning, and the option and flag mapping.

const FAST = {
  prefillTokensPerSec: 200_000,
  decodeMsPerStep: 2,
  decodeMsPerExtraSeq: 0,
  loadBaseMs: 1,
  loadMsPerMb: 0,
  reloadBaseMs: 1,
  reloadMsPerMb: 0,
  activateMsPerMb: 0,
};

const open: RunningReplicaSim[] = [];
afterEach(async () => {
  for (const r of open.splice(0)) {
    await r.close();
  }
});
afterAll(removeAdapterRoot);

async function start(
  maxLoras: number,
  maxCpuLoras?: number,
): Promise<{ sim: SglangReplicaSim; url: string }> {
  const sim = createReplicaSim({
    engine: "sglang",
    servedModelNames: ["base"],
    maxLoras,
    ...(maxCpuLoras === undefined ? {} : { maxCpuLoras }),
    latency: FAST,
  });
  const running = await sim.start(0);
  open.push(running);
  return { sim, url: running.url };
}

async function post(url: string, path: string, body: unknown) {
  const res = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown>, at: performance.now() };
}

async function loaded(url: string, pinned = false): Promise<string> {
  const name = uniqueName("a");
  const res = await post(url, "/load_lora_adapter", {
    lora_name: name,
    lora_path: await writeAdapter(),
    pinned,
  });
  expect(res.status).toBe(200);
  return name;
}

const chat = (model: string, maxTokens: number) => ({
  model,
  messages: [{ role: "user", content: "hi" }],
  max_tokens: maxTokens,
  ignore_eos: true,
});

describe("SGLang mode", () => {
  it("maps maxLoras to --max-loras-per-batch and maxCpuLoras to --max-loaded-loras", () => {
    const sim = createReplicaSim({ engine: "sglang", maxLoras: 3, maxCpuLoras: 5 });
    expect(sim.config).toMatchObject({ engine: "sglang", maxLorasPerBatch: 3, maxLoadedLoras: 5 });
    expect(createReplicaSim({ engine: "sglang" }).config).toMatchObject({
      maxLorasPerBatch: 8,
      maxLoadedLoras: null,
    });
    expect(() => createReplicaSim({ engine: "sglang", maxLoras: 4, maxCpuLoras: 2 })).toThrow(
      /max_loaded_loras/,
    );
    const cli = parseCli(["--engine", "sglang", "--max-loras-per-batch", "3", "--max-loaded-loras", "6"], {});
    expect(cli).toMatchObject({ engine: "sglang", maxLoras: 3, maxCpuLoras: 6 });
  });

  it("a batch mixes at most --max-loras-per-batch adapters: another adapter's request waits", async () => {
    const { sim, url } = await start(1);
    const a = await loaded(url);
    const b = await loaded(url);
    const first = stream({ url, apiKey: undefined }, "/v1/chat/completions", chat(`base:${a}`, 60));
    await waitFor(() => sim.inspect().running.length === 1);
    const second = post(url, "/v1/chat/completions", chat(`base:${b}`, 2));
    await waitFor(() => sim.inspect().waiting.some((w) => w.lora === b && w.reason === "deferred"));
    const [s1, s2] = await Promise.all([first, second]);
    expect(s1.events.at(-1)?.data).toBe("[DONE]");
    expect(s2.status).toBe(200);
  });

  it("an unload draining its adapter holds the update lock: a load behind it answers after it", async () => {
    const { sim, url } = await start(2);
    const a = await loaded(url);
    const s = stream({ url, apiKey: undefined }, "/v1/chat/completions", chat(`base:${a}`, 80));
    await waitFor(() => sim.inspect().running.length === 1);
    const unload = post(url, "/unload_lora_adapter", { lora_name: a });
    await waitFor(() => sim.inspect().draining.includes(a));
    const other = post(url, "/load_lora_adapter", {
      lora_name: uniqueName("b"),
      lora_path: await writeAdapter(),
    });
    await sleep(20);
    expect(sim.inspect().draining).toEqual([a]);
    const streamed = await s;
    const [u, o] = await Promise.all([unload, other]);
    expect(streamed.events.at(-1)?.data).toBe("[DONE]");
    expect(u.status).toBe(200);
    expect(o.status).toBe(200);
    expect(o.at).toBeGreaterThanOrEqual(u.at);
    expect(sim.inspect().backend).not.toContain(a);
  });

  it("past --max-loaded-loras the load waits for the evicted adapter's requests, and pinned ones stay", async () => {
    const { sim, url } = await start(2, 2);
    const pinned = await loaded(url, true);
    const lru = await loaded(url);
    const s = stream({ url, apiKey: undefined }, "/v1/chat/completions", chat(`base:${lru}`, 60));
    await waitFor(() => sim.inspect().running.length === 1);
    const extraP = post(url, "/load_lora_adapter", {
      lora_name: uniqueName("c"),
      lora_path: await writeAdapter(),
    });
    const streamed = await s;
    const streamEnd = performance.now();
    const extra = await extraP;
    expect(streamed.events.at(-1)?.data).toBe("[DONE]");
    // T: the eviction's `_unload_lora_adapter_locked` waits for the stream before the load answers.
    expect(extra.at).toBeGreaterThanOrEqual(streamEnd - 5);
    expect(extra.status).toBe(200);
    const names = Object.keys(extra.json.loaded_adapters as Record<string, string>);
    expect(names).toContain(pinned);
    expect(names).not.toContain(lru);
    expect(sim.inspect().everLoaded).toContain(lru);
    // The pinned limit: at most max_loras_per_batch - 1 pinned (lora_manager.py load_lora_adapter).
    const refused = await post(url, "/load_lora_adapter", {
      lora_name: uniqueName("p"),
      lora_path: await writeAdapter(),
      pinned: true,
    });
    expect(refused.status).toBe(400);
    expect(refused.json.error_message).toBe(
      "Already have 1 pinned adapters, max allowed is 1 (reserving 1 slot for dynamic use). Please unpin some adapters or increase max_loras_per_batch.",
    );
  });
});
