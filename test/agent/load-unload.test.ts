import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { isAbsolute, join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { CacheDto, LoadAdapterResponse, UnloadAdapterResponse } from "../../adapters/agent/schema.ts";
import type { AdapterStore } from "../../adapters/storage.ts";
import { eventually } from "../eventually.ts";
import { useHarness } from "../harness.ts";
import { manualClock } from "../manual-clock.ts";
import { replicaAdapters, type StoredVersion, startReplica, startTestAgent, uploadVersion } from "./world.ts";

const h = useHarness();

let versions: StoredVersion[] = [];
let short = "";

beforeAll(async () => {
  const tenant = await h.newTenant();
  short = tenant.id.slice(-6);
  versions = await Promise.all(
    [1, 2, 3, 4].map((seed) => uploadVersion(h, tenant, `support-${seed}`, { seed })),
  );
});

const body = (name: string, v: StoredVersion) => ({ lora_name: name, ...v });
const version = (i: number) => versions[i] ?? expect.unreachable(`version ${i} was not uploaded`);

async function readRest(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
    text += decoder.decode(chunk.value, { stream: true });
  }
  return text;
}

describe("loading and unloading through the agent", () => {
  it("loads an uploaded adapter from S3 onto the replica by absolute path, serves it, then unloads and removes its files", async () => {
    const { replica } = await startReplica();
    const clock = manualClock();
    // The GC loop stays out of the way: the test runs each pass itself, at the time it chooses.
    const agent = await startTestAgent(h, replica.url, {
      now: clock.now,
      unloadGraceMs: 60_000,
      gcIntervalMs: 3_600_000,
    });
    const name = `t-${short}-support-v1`;
    const v = version(0);

    const loaded = await agent.call<LoadAdapterResponse>("POST", "/v1/adapters/load", body(name, v));
    expect(loaded.status, JSON.stringify(loaded.body)).toBe(200);
    const dir = join(agent.cacheDir, name);
    expect(loaded.body).toEqual({
      lora_name: name,
      path: dir,
      status: "loaded",
      downloaded: true,
      bytes: expect.any(Number),
    });

    expect(await replicaAdapters(replica.url)).toEqual([{ id: name, root: dir }]);
    expect(isAbsolute(dir)).toBe(true);
    const weights = await readFile(join(dir, "adapter_model.safetensors"));
    expect(createHash("sha256").update(weights).digest("hex")).toBe(v.sha256);
    expect(JSON.parse(await readFile(join(dir, "adapter_config.json"), "utf8"))).toMatchObject({ r: 8 });

    const chat = await fetch(`${replica.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: name, messages: [{ role: "user", content: "hello" }], max_tokens: 8 }),
    });
    expect(chat.status).toBe(200);
    const completion = (await chat.json()) as { model: string; usage: { completion_tokens: number } };
    expect(completion.model).toBe(name);
    expect(completion.usage.completion_tokens).toBeGreaterThan(0);

    const cacheBefore = await agent.call<CacheDto>("GET", "/v1/cache");
    expect(cacheBefore.body.entries).toEqual([
      expect.objectContaining({ lora_name: name, registered: true, pending_delete: false, sha256: v.sha256 }),
    ]);
    expect(cacheBefore.body.bytes).toBeGreaterThan(v.size_bytes);

    const unloaded = await agent.call<UnloadAdapterResponse>("POST", "/v1/adapters/unload", {
      lora_name: name,
    });
    expect(unloaded.status).toBe(200);
    expect(unloaded.body).toEqual({ lora_name: name, unregistered: true, files: "pending_delete" });
    expect(await replicaAdapters(replica.url)).toEqual([]);
    // The replica is idle, but a request may have picked the adapter before it shows in the
    // metrics: the files stay for the grace period.
    clock.advance(59_999);
    expect(await agent.running.agent.collectGarbage()).toEqual({ removed: [] });
    expect(existsSync(dir)).toBe(true);
    clock.advance(1);
    expect(await agent.running.agent.collectGarbage()).toEqual({ removed: [name] });
    expect(existsSync(dir)).toBe(false);
    expect(await agent.cacheListing()).toEqual([]);
    expect((await agent.call<CacheDto>("GET", "/v1/cache")).body).toMatchObject({ bytes: 0, entries: [] });
  });

  it("keeps the files of an adapter unloaded mid-stream until the stream ends, so the engine can still re-read them", async () => {
    const { sim, replica } = await startReplica();
    const agent = await startTestAgent(h, replica.url, { gcIntervalMs: 30 });
    const a = `t-${short}-inflight-v1`;
    const b = `t-${short}-other-v1`;
    expect((await agent.call("POST", "/v1/adapters/load", body(a, version(0)))).status).toBe(200);

    const stream = await fetch(`${replica.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: a,
        messages: [{ role: "user", content: "tell me a long story" }],
        // Long enough (≈3 s of 3 ms steps) to still be running on a loaded machine when A is evicted below.
        max_tokens: 1000,
        ignore_eos: true,
        stream: true,
        stream_options: { include_usage: true },
      }),
    });
    expect(stream.status).toBe(200);
    const reader = stream.body!.getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);

    const unloaded = await agent.call<UnloadAdapterResponse>("POST", "/v1/adapters/unload", { lora_name: a });
    expect(unloaded.body).toEqual({ lora_name: a, unregistered: true, files: "pending_delete" });
    const cache = await agent.call<CacheDto>("GET", "/v1/cache");
    expect(cache.body.entries).toEqual([
      expect.objectContaining({ lora_name: a, registered: false, pending_delete: true }),
    ]);

    // With one CPU slot, loading another adapter evicts A from the engine: A's next step re-reads its files.
    expect((await agent.call("POST", "/v1/adapters/load", body(b, version(1)))).status).toBe(200);
    await eventually(async () => sim.inspect().cpuCache.includes(a), 3_000, 20); // A's step has re-read it
    await agent.running.agent.collectGarbage(); // a GC pass while A still runs: its files must stay
    expect(existsSync(join(agent.cacheDir, a, "adapter_model.safetensors"))).toBe(true);
    expect(sim.inspect().running.map((r) => r.lora)).toContain(a);

    const rest = await readRest(reader);
    expect(rest).not.toContain('"error"');
    const usage = rest
      .split("\n\n")
      .map((e) => e.replace(/^data: /, ""))
      .filter((e) => e.startsWith("{"))
      .map((e) => JSON.parse(e) as { usage?: { completion_tokens: number } })
      .find((e) => e.usage);
    expect(usage?.usage?.completion_tokens).toBe(1000);

    await eventually(async () => (await agent.cacheListing()).join() === b, 3_000, 20);
    expect((await fetch(`${replica.url}/health`)).status).toBe(200);
    expect(sim.inspect().dead).toBe(false);
  });

  it("answers a second load of a registered name with 200 already_loaded and no second download", async () => {
    const { replica } = await startReplica();
    const agent = await startTestAgent(h, replica.url);
    const name = `t-${short}-twice-v1`;
    const first = await agent.call<LoadAdapterResponse>("POST", "/v1/adapters/load", body(name, version(2)));
    const second = await agent.call<LoadAdapterResponse>("POST", "/v1/adapters/load", body(name, version(2)));
    expect([first.status, second.status]).toEqual([200, 200]);
    expect(first.body).toMatchObject({ status: "loaded", downloaded: true });
    expect(second.body).toMatchObject({ status: "already_loaded", downloaded: false, path: first.body.path });
    expect(agent.running.agent.downloads).toBe(1);
    expect(await replicaAdapters(replica.url)).toEqual([{ id: name, root: first.body.path }]);
  });

  it("serialises concurrent loads of one name into a single download and a single registration", async () => {
    const { replica } = await startReplica();
    let weightGets = 0;
    const v = version(3);
    const counting: AdapterStore = {
      ...h.deps.store,
      get: (key, signal) => {
        if (key === v.object_key) {
          weightGets += 1;
        }
        return h.deps.store.get(key, signal);
      },
    };
    const agent = await startTestAgent(h, replica.url, { store: counting });
    const name = `t-${short}-burst-v1`;
    const results = await Promise.all(
      Array.from({ length: 6 }, () =>
        agent.call<LoadAdapterResponse>("POST", "/v1/adapters/load", body(name, v)),
      ),
    );
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(results.filter((r) => r.body.downloaded)).toHaveLength(1);
    expect(results.filter((r) => r.body.status === "loaded")).toHaveLength(1);
    expect(weightGets).toBe(1);
    expect(agent.running.agent.downloads).toBe(1);
    expect(await replicaAdapters(replica.url)).toEqual([{ id: name, root: join(agent.cacheDir, name) }]);
  });

  it("rebuilds its cache index after a restart, removing orphan temp dirs and keeping registered adapters", async () => {
    const { replica } = await startReplica();
    const first = await startTestAgent(h, replica.url);
    const name = `t-${short}-restart-v1`;
    expect((await first.call("POST", "/v1/adapters/load", body(name, version(0)))).status).toBe(200);
    await first.running.close();
    await mkdir(join(first.cacheDir, ".tmp-0123456789abcdef"));

    const second = await startTestAgent(h, replica.url, { cacheDir: first.cacheDir });
    expect(await second.cacheListing()).toEqual([name]);
    const cache = await second.call<CacheDto>("GET", "/v1/cache");
    expect(cache.body.entries).toEqual([
      expect.objectContaining({
        lora_name: name,
        registered: true,
        pending_delete: false,
        sha256: version(0).sha256,
      }),
    ]);
    const again = await second.call<LoadAdapterResponse>("POST", "/v1/adapters/load", body(name, version(0)));
    expect(again.body).toMatchObject({ status: "already_loaded", downloaded: false });
    const unloaded = await second.call<UnloadAdapterResponse>("POST", "/v1/adapters/unload", {
      lora_name: name,
    });
    expect(unloaded.status).toBe(200);
    await eventually(async () => (await second.cacheListing()).length === 0, 3_000, 20);
  });
});
