import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import postgres from "postgres";
import { describe, expect, it } from "vitest";
import { loadFleetSnapshot } from "../../db/queries/fleet.ts";
import { recordReplicaSeen } from "../../db/queries/replicas.ts";
import { createReplicaSim } from "../../infra/replica-sim/index.ts";
import { createLogger } from "../../lib/logger.ts";
import { FleetPoller } from "../../scheduler/fleet-poller.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();
const BASE = "llama-3.1-8b-instruct-awq";

interface ReplicaDto {
  id: string;
  url: string;
  engine: string;
  status: string;
  last_seen_at: string | null;
  draining_since: string | null;
  live: { registered_adapters: string[]; running: number; waiting: number } | null;
}

/**
 * A front for a replica whose /health answers only when `open()` is called: a poll is caught between
 * reading the replica's row and writing what it saw.
 */
async function gatedHealth(upstream: string) {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  let asked!: () => void;
  const healthAsked = new Promise<void>((resolve) => {
    asked = resolve;
  });
  const server: Server = createServer((req, res) => {
    void (async () => {
      if (req.url === "/health") {
        asked();
        await gate;
      }
      const answer = await fetch(`${upstream}${req.url ?? "/"}`, { method: req.method ?? "GET" });
      res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "text/plain" });
      res.end(Buffer.from(await answer.arrayBuffer()));
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    healthAsked,
    open,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A poll's clock `ms` ahead of now: the replica has been unseen that much longer. */
const later = (ms: number) => () => new Date(Date.now() + ms);

function poller(options: { downAfterMs: number; timeoutMs: number }): FleetPoller {
  return new FleetPoller(h.deps.db, createLogger({ level: "silent" }), { intervalMs: 50, ...options });
}

/** Registers a replica at `url` through the admin API; returns it and a reader of its current DTO. */
async function register(url: string) {
  const token = await h.adminToken();
  const created = await h.request<ReplicaDto>("POST", "/admin/replicas", { token, body: replicaBody(url) });
  const read = async () =>
    (await h.request<ReplicaDto>("GET", `/admin/replicas/${created.body.id}`, { token })).body;
  return { id: created.body.id, token, read };
}

function replicaBody(url: string) {
  return { url, base_model: BASE, max_loras: 2, max_cpu_loras: 4, max_lora_rank: 16 };
}

describe("fleet registry", () => {
  it("registers, lists, drains and removes replicas (operator only)", async () => {
    const token = await h.adminToken();
    const created = await h.request<ReplicaDto>("POST", "/admin/replicas", {
      token,
      body: replicaBody("http://127.0.0.1:59001/"),
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ status: "unknown", live: null, url: "http://127.0.0.1:59001" });
    const dup = await h.request("POST", "/admin/replicas", {
      token,
      body: replicaBody("http://127.0.0.1:59001"),
    });
    expect(dup.status).toBe(409);
    const drained = await h.request<ReplicaDto>("POST", `/admin/replicas/${created.body.id}/drain`, {
      token,
    });
    expect(drained.status).toBe(202);
    expect(drained.body.status).toBe("draining");
    const tenant = await h.newTenant();
    expect((await h.request("GET", "/admin/replicas", { token: await tenant.token() })).status).toBe(403);
    expect((await h.request("DELETE", `/admin/replicas/${created.body.id}`, { token })).status).toBe(204);
    expect((await h.request("GET", `/admin/replicas/${created.body.id}`, { token })).status).toBe(404);
  });

  it.each([
    [{ ...replicaBody("ftp://x"), url: "ftp://127.0.0.1/" }, "url"],
    [{ ...replicaBody("http://127.0.0.1:1"), max_cpu_loras: 1 }, "max_cpu_loras"],
    [{ ...replicaBody("http://127.0.0.1:1"), max_lora_rank: 24 }, "max_lora_rank"],
    [{ ...replicaBody("http://127.0.0.1:1"), gpu: "h100" }, "gpu"],
    [{ ...replicaBody("http://127.0.0.1:1"), engine: "tgi" }, "engine"],
    [{ ...replicaBody("http://127.0.0.1:1"), engine: "sglang", max_registered: 5 }, "max_registered"],
    [{ ...replicaBody("http://127.0.0.1:1"), engine: "sglang", max_lora_rank: 2048 }, "max_lora_rank"],
  ])("refuses %j naming %s", async (body, field) => {
    const res = await h.request<{ errors: { path: string }[] }>("POST", "/admin/replicas", {
      token: await h.adminToken(),
      body,
    });
    expect(res.status).toBe(400);
    expect(res.body.errors.map((e) => e.path)).toContain(field);
  });

  it("registers a replica's engine: vllm by default, sglang with its own rank range and registration budget", async () => {
    const token = await h.adminToken();
    const plain = await h.request<ReplicaDto>("POST", "/admin/replicas", {
      token,
      body: replicaBody("http://127.0.0.1:59011"),
    });
    expect(plain.status).toBe(201);
    expect(plain.body).toMatchObject({ engine: "vllm", max_registered: 16 });
    // Rank 24 is no vLLM rank, but SGLang takes any; it holds every registered adapter in memory.
    const sglang = await h.request<ReplicaDto>("POST", "/admin/replicas", {
      token,
      body: { ...replicaBody("http://127.0.0.1:59012"), engine: "sglang", max_lora_rank: 24 },
    });
    expect(sglang.status).toBe(201);
    expect(sglang.body).toMatchObject({ engine: "sglang", max_lora_rank: 24, max_registered: 4 });
    const listed = await h.request<{ data: ReplicaDto[] }>("GET", "/admin/replicas", { token });
    const engines = Object.fromEntries(listed.body.data.map((r) => [r.url, r.engine]));
    expect(engines).toMatchObject({ "http://127.0.0.1:59011": "vllm", "http://127.0.0.1:59012": "sglang" });
    for (const r of [plain.body, sglang.body]) {
      expect((await h.request("DELETE", `/admin/replicas/${r.id}`, { token })).status).toBe(204);
    }
  });

  it("marks a replica up with its live state, down within the grace after it dies, and up when it returns", async () => {
    const running = await createReplicaSim({ maxLoras: 2, maxCpuLoras: 4, maxLoraRank: 16 }).start(0);
    const { read } = await register(running.url);
    const fleet = poller({ downAfterMs: 300, timeoutMs: 200 });
    try {
      await fleet.pollOnce();
      const up = await read();
      expect(up.status).toBe("up");
      expect(up.live).toEqual({
        registered_adapters: [],
        running: 0,
        waiting: 0,
        kv_cache_usage: expect.any(Number),
        max_model_len: 8192,
      });

      await running.close();
      await fleet.pollOnce();
      expect((await read()).status).toBe("up"); // within the grace
      await fleet.pollOnce(later(350));
      expect((await read()).status).toBe("down");

      const back = await createReplicaSim({ maxLoras: 2, maxCpuLoras: 4, maxLoraRank: 16 }).start(
        running.port,
      );
      try {
        await fleet.pollOnce();
        const again = await read();
        expect(again.status).toBe("up");
        expect(Date.parse(again.last_seen_at ?? "")).toBeGreaterThan(Date.parse(up.last_seen_at ?? ""));
      } finally {
        await back.close();
      }
    } finally {
      await fleet.stop();
    }
  });

  it("lists the fleet in registration order, whichever replica a poll updated last", async () => {
    const first = await register("http://127.0.0.1:1/order-a");
    const second = await register("http://127.0.0.1:1/order-b");
    const order = async () =>
      (await loadFleetSnapshot(h.deps.db)).replicas
        .map((r) => r.id)
        .filter((id) => id === first.id || id === second.id);
    expect(await order()).toEqual([first.id, second.id]);
    // A good poll rewrites the row (Postgres stores the new version after the other row's): gateways
    // break ties between equally busy replicas by this order, so it must not follow the polls.
    const liveState = { registeredAdapters: [], running: 0, waiting: 0, kvCacheUsage: null };
    await recordReplicaSeen(h.deps.db, first.id, { liveState, seenAt: new Date() });
    expect(await order()).toEqual([first.id, second.id]);
  });

  it("keeps the latest time a replica was seen when an older poll's answer is written after a newer one", async () => {
    const { id, read } = await register("http://127.0.0.1:1/seen-order");
    const liveState = { registeredAdapters: [], running: 0, waiting: 0, kvCacheUsage: null };
    const newer = new Date();
    await recordReplicaSeen(h.deps.db, id, { liveState, seenAt: newer });
    await recordReplicaSeen(h.deps.db, id, { liveState, seenAt: new Date(newer.getTime() - 500) });
    expect(Date.parse((await read()).last_seen_at ?? "")).toBe(newer.getTime());
  });

  it("records a replica seen when the poll asked it, not when the answer was written", async () => {
    const running = await createReplicaSim({ maxLoras: 2, maxCpuLoras: 4, maxLoraRank: 16 }).start(0);
    const front = await gatedHealth(running.url);
    const { read } = await register(front.url);
    const fleet = poller({ downAfterMs: 300, timeoutMs: 5_000 });
    try {
      const poll = fleet.pollOnce();
      await front.healthAsked;
      // A gateway marks the replica suspect now (it failed a request): an answer the poll asked for
      // before that must not count as seeing the replica since, or the dead one is trusted again.
      await new Promise((r) => setTimeout(r, 20));
      const suspectSince = Date.now();
      await new Promise((r) => setTimeout(r, 20));
      front.open();
      await poll;
      const seenAt = Date.parse((await read()).last_seen_at ?? "");
      expect(seenAt).toBeLessThan(suspectSince);
    } finally {
      await fleet.stop();
      await front.close();
      await running.close();
    }
  });

  it("keeps a drain that lands while a poll is in flight (the poll does not write up over it)", async () => {
    const running = await createReplicaSim({ maxLoras: 2, maxCpuLoras: 4, maxLoraRank: 16 }).start(0);
    const front = await gatedHealth(running.url);
    const { id, token, read } = await register(front.url);
    const fleet = poller({ downAfterMs: 300, timeoutMs: 5_000 });
    try {
      const poll = fleet.pollOnce();
      await front.healthAsked; // the poll has read the row (status unknown) and waits on the replica
      const drained = await h.request("POST", `/admin/replicas/${id}/drain`, { token });
      expect(drained.status).toBe(202);
      front.open();
      const outcome = (await poll).find((o) => o.replicaId === id);
      expect(outcome).toMatchObject({ ok: true, status: "draining" });
      const after = await read();
      expect(after.status).toBe("draining");
      expect(after.live?.registered_adapters).toEqual([]); // the poll's live state was still recorded
    } finally {
      await fleet.stop();
      await front.close();
      await running.close();
    }
  });

  it("reads a drain written as a status by an older release, and keeps it through the replica going down", async () => {
    const running = await createReplicaSim({ maxLoras: 2, maxCpuLoras: 4, maxLoraRank: 16 }).start(0);
    const { id, read } = await register(running.url);
    // What an API process from before migration 0005 writes for POST /admin/replicas/{id}/drain.
    const oldRelease = postgres(h.config.db.url, { max: 1 });
    await oldRelease`update replicas set status = 'draining', updated_at = now() where id = ${id}`;
    await oldRelease.end();
    expect(await read()).toMatchObject({ status: "draining" });
    const fleet = poller({ downAfterMs: 200, timeoutMs: 200 });
    try {
      await fleet.pollOnce();
      const polled = await read();
      expect(polled.status).toBe("draining");
      expect(polled.draining_since).not.toBeNull();
      await running.close();
      await fleet.pollOnce();
      expect((await read()).status).toBe("draining"); // within the grace
      await fleet.pollOnce(later(250));
      expect(await read()).toMatchObject({ status: "down", draining_since: polled.draining_since });
    } finally {
      await fleet.stop();
    }
  });
});
