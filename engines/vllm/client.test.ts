import { rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { createReplicaSim, type RunningReplicaSim } from "../../infra/replica-sim/index.ts";
import { FAST_LATENCY, freePort, removeAdapterRoot, writeAdapter } from "../../test/conformance/harness.ts";
import {
  MAX_METRICS_BYTES,
  parseErrorBody,
  type ReplicaClient,
  validateAdapterPath,
  validateLoraName,
} from "../replica-client.ts";
import { createReplicaClient, parsePrometheusText, summarizeMetrics } from "./index.ts";

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) {
    await c();
  }
});
afterAll(removeAdapterRoot);

async function simClient(
  options: Parameters<typeof createReplicaSim>[0] = {},
): Promise<{ client: ReplicaClient; running: RunningReplicaSim; sim: ReturnType<typeof createReplicaSim> }> {
  const sim = createReplicaSim({ servedModelNames: ["base"], ...options, latency: FAST_LATENCY });
  const running = await sim.start(0);
  const client = createReplicaClient({ baseUrl: `${running.url}/`, apiKey: options.apiKey });
  cleanups.push(
    () => running.close(),
    () => client.close(),
  );
  return { client, running, sim };
}

/** Loads adapter "m" and keeps one long stream on it running until the returned stop() is called. */
async function streamOnAdapter(client: ReplicaClient, running: RunningReplicaSim): Promise<() => void> {
  await client.loadAdapter({ loraName: "m", absolutePath: await writeAdapter() });
  const ac = new AbortController();
  const res = await fetch(`${running.url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "m", prompt: "x", max_tokens: 3000, ignore_eos: true, stream: true }),
    signal: ac.signal,
  });
  await res.body?.getReader().read();
  return () => ac.abort();
}

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
}

/** A plain HTTP server answering each request with `reply` (or never, when it returns null). */
async function rawServer(
  reply: (req: Seen) => { status: number; body: string } | null,
): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server: Server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => {
      body += c.toString("utf8");
    });
    req.on("end", () => {
      const s = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body };
      seen.push(s);
      const r = reply(s);
      if (r) {
        res.writeHead(r.status, { "content-type": "application/json" });
        res.end(r.body);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

describe("replica client against the simulator", () => {
  it("loads, lists, and unloads an adapter, and reports each refusal by kind", async () => {
    const { client } = await simClient();
    const dir = await writeAdapter();
    expect(await client.loadAdapter({ loraName: "t1-support@v1", absolutePath: dir })).toEqual({
      kind: "ok",
    });
    expect(await client.loadAdapter({ loraName: "t1-support@v1", absolutePath: dir })).toMatchObject({
      kind: "already_loaded",
    });
    const models = await client.listModels();
    expect(models).toEqual({
      kind: "ok",
      value: {
        base: [{ id: "base", root: expect.any(String), parent: null, maxModelLen: 8192 }],
        adapters: [{ id: "t1-support@v1", root: dir, parent: "base", maxModelLen: null }],
      },
    });
    expect(await client.loadAdapter({ loraName: "gone", absolutePath: `${dir}-missing` })).toEqual({
      kind: "not_found",
      message: `Loading lora gone failed: No adapter found for ${dir}-missing`,
    });
    const tooBig = await writeAdapter({ config: { r: 32 } });
    expect(await client.loadAdapter({ loraName: "big", absolutePath: tooBig })).toEqual({
      kind: "adapter_rejected",
      status: 500,
      message: "Call to add_lora method failed: LoRA rank 32 is greater than max_lora_rank 16.",
    });
    expect(await client.unloadAdapter("t1-support@v1")).toEqual({ kind: "ok" });
    expect(await client.unloadAdapter("t1-support@v1")).toMatchObject({ kind: "not_found" });
  });

  it("treats a legacy replica's 400 rejection like a 500 one", async () => {
    const { client } = await simClient({ legacyErrors: true });
    const bad = await writeAdapter({ config: { use_dora: true } });
    expect(await client.loadAdapter({ loraName: "dora", absolutePath: bad })).toEqual({
      kind: "adapter_rejected",
      status: 400,
      message: "Call to add_lora method failed: vLLM does not yet support DoRA.",
    });
    expect(await client.tokenize({ prompt: "x", model: "nope" })).toEqual({
      kind: "not_found",
      message: "The model `nope` does not exist.",
    });
  });

  it("treats a v0.11 replica's nested 400 rejection like a 500 one, and its duplicate refusal as already loaded", async () => {
    const { client } = await simClient({ profile: "v0.11" });
    const bad = await writeAdapter({ config: { use_dora: true } });
    expect(await client.loadAdapter({ loraName: "dora", absolutePath: bad })).toEqual({
      kind: "adapter_rejected",
      status: 400,
      message: "Call to add_lora method failed: vLLM does not yet support DoRA.",
    });
    const ok = await writeAdapter();
    expect(await client.loadAdapter({ loraName: "a", absolutePath: ok })).toEqual({ kind: "ok" });
    expect(await client.loadAdapter({ loraName: "a", absolutePath: ok })).toEqual({
      kind: "already_loaded",
      message: "The lora adapter 'a' has already been loaded.",
    });
  });

  it("detects runtime LoRA updating, version, served names and max_loras", async () => {
    const { client } = await simClient({ maxLoras: 3, maxCpuLoras: 3 });
    const dir = await writeAdapter();
    await client.loadAdapter({ loraName: "a", absolutePath: dir });
    await fetch(`${client.baseUrl}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "a", prompt: "x", max_tokens: 2 }),
    });
    expect(await client.capabilities()).toEqual({
      kind: "ok",
      value: {
        runtimeLoraUpdating: true,
        version: "0.21.0",
        servedModels: ["base"],
        maxModelLen: 8192,
        maxLoras: 3,
      },
    });
    const off = await simClient({ allowRuntimeLoraUpdating: false });
    const caps = await off.client.capabilities();
    expect(caps.kind === "ok" && caps.value.runtimeLoraUpdating).toBe(false);
    expect(await off.client.unloadAdapter("a")).toEqual({ kind: "runtime_updates_disabled" });
  });

  it("reports an unauthorized key on /v1 but health without one", async () => {
    const { running } = await simClient({ apiKey: "secret" });
    const wrong = createReplicaClient({ baseUrl: running.url, apiKey: "nope" });
    cleanups.push(() => wrong.close());
    expect(await wrong.loadAdapter({ loraName: "a", absolutePath: "/x" })).toEqual({
      kind: "unauthorized",
      status: 401,
    });
    expect(await wrong.health()).toEqual({ kind: "ok" });
    const tok = await wrong.tokenize({ prompt: "Hello world!" });
    expect(tok).toEqual({
      kind: "ok",
      value: { count: 4, tokens: [128000, 9906, 1917, 0], maxModelLen: 8192 },
    });
  });

  it("sees a dead engine as unhealthy and its load errors as replica errors, not rejections", async () => {
    const { client, running } = await simClient({ maxLoras: 1, maxCpuLoras: 1 });
    const a = await writeAdapter();
    const b = await writeAdapter();
    await client.loadAdapter({ loraName: "a", absolutePath: a });
    await client.loadAdapter({ loraName: "b", absolutePath: b });
    await rm(a, { recursive: true });
    const res = await fetch(`${running.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "a", prompt: "x", max_tokens: 2 }),
    });
    expect(res.status).toBe(500);
    expect(await client.health()).toEqual({ kind: "unhealthy", status: 503 });
    const c = await writeAdapter();
    expect(await client.loadAdapter({ loraName: "c", absolutePath: c })).toMatchObject({
      kind: "replica_error",
      status: 500,
      message: expect.stringContaining("EngineCore encountered an issue"),
    });
  });

  it("reads running, waiting and the newest lora_requests_info from /metrics", async () => {
    const { client, running } = await simClient();
    const stop = await streamOnAdapter(client, running);
    const m = await client.metrics();
    stop();
    expect(m.kind).toBe("ok");
    if (m.kind === "ok") {
      expect(m.value.running).toBe(1);
      expect(m.value.waiting).toBe(0);
      expect(m.value.waitingByReason).toEqual({ capacity: 0, deferred: 0 });
      expect(m.value.kvCacheUsage).toBeGreaterThan(0);
      expect(m.value.lora).toMatchObject({ maxLora: 1, running: ["m"], waiting: ["m"] });
    }
  });
});

describe("vllm:lora_requests_info on a long-running replica", () => {
  it("reads the newest series among 10,000 stale ones, and keeps only it", async () => {
    const { client, running, sim } = await simClient();
    const stop = await streamOnAdapter(client, running);
    // As vLLM, the simulator never drops an adapter set's series.
    sim.addStaleLoraSeries(10_000);
    const exposed = await (await fetch(`${running.url}/metrics`)).text();
    expect(exposed.split("\n").filter((l) => l.startsWith("vllm:lora_requests_info{")).length).toBe(10_001);

    const m = await client.metrics();
    stop();
    expect(m.kind).toBe("ok");
    if (m.kind === "ok") {
      expect(m.value.lora).toMatchObject({ running: ["m"], waiting: ["m"] });
      expect(m.value.samples.filter((s) => s.name === "vllm:lora_requests_info")).toHaveLength(1);
    }
  });

  it("refuses a /metrics answer past its byte cap as a replica error instead of buffering it", async () => {
    const line = `vllm:lora_requests_info{max_lora="1",running_lora_adapters="${"a".repeat(200)}",waiting_lora_adapters=""} 1.0\n`;
    const body = line.repeat(Math.ceil((MAX_METRICS_BYTES + 1) / line.length));
    const srv = await rawServer(() => ({ status: 200, body }));
    const client = createReplicaClient({ baseUrl: srv.url });
    cleanups.push(() => client.close());
    expect(await client.metrics()).toEqual({
      kind: "replica_error",
      status: 200,
      message: `the replica's answer to GET /metrics is larger than ${MAX_METRICS_BYTES} bytes`,
    });
  });
});

describe("replica client on the wire", () => {
  it("sends the key, JSON, an absolute path and never load_inplace", async () => {
    const srv = await rawServer(() => ({
      status: 200,
      body: "Success: LoRA adapter 'a' added successfully.",
    }));
    const client = createReplicaClient({ baseUrl: srv.url, apiKey: "k" });
    cleanups.push(() => client.close());
    expect(await client.loadAdapter({ loraName: "a", absolutePath: "/srv/adapters/a" })).toEqual({
      kind: "ok",
    });
    const req = srv.seen[0];
    expect(req?.url).toBe("/v1/load_lora_adapter");
    expect(req?.headers.authorization).toBe("Bearer k");
    expect(req?.headers["content-type"]).toBe("application/json");
    expect(JSON.parse(req?.body ?? "")).toEqual({ lora_name: "a", lora_path: "/srv/adapters/a" });
  });

  it("refuses relative paths and names vLLM would mangle without sending anything", async () => {
    const srv = await rawServer(() => ({ status: 200, body: "" }));
    const client = createReplicaClient({ baseUrl: srv.url });
    cleanups.push(() => client.close());
    for (const [loraName, absolutePath] of [
      ["ok", "adapters/a"],
      ["ok", "~/a"],
      ["a,b", "/a"],
      ["t1/a", "/a"],
      ["", "/a"],
      ["two words", "/a"],
    ]) {
      expect(
        await client.loadAdapter({ loraName: loraName ?? "", absolutePath: absolutePath ?? "" }),
      ).toMatchObject({
        kind: "invalid_input",
      });
    }
    expect(await client.unloadAdapter("a,b")).toMatchObject({ kind: "invalid_input" });
    expect(srv.seen).toHaveLength(0);
  });

  it("times out a replica that never answers, and throws the caller's own abort", async () => {
    const srv = await rawServer(() => null);
    const client = createReplicaClient({ baseUrl: srv.url, timeoutMs: 100 });
    cleanups.push(() => client.close());
    expect(await client.health()).toEqual({ kind: "timeout", timeoutMs: 100 });
    expect(await client.listModels({ timeoutMs: 50 })).toEqual({ kind: "timeout", timeoutMs: 50 });
    const ac = new AbortController();
    const pending = client.metrics({ signal: ac.signal, timeoutMs: 5_000 });
    ac.abort(new Error("shutting down"));
    await expect(pending).rejects.toThrow("shutting down");
  });

  it("reports a closed port as unreachable and a non-JSON error as a replica error", async () => {
    const port = await freePort();
    const client = createReplicaClient({ baseUrl: `http://127.0.0.1:${port}` });
    cleanups.push(() => client.close());
    const r = await client.health();
    expect(r.kind).toBe("unreachable");
    expect(r.kind === "unreachable" && r.error).toContain("ECONNREFUSED");
    const srv = await rawServer(() => ({ status: 502, body: "<html>bad gateway</html>" }));
    const proxied = createReplicaClient({ baseUrl: srv.url });
    cleanups.push(() => proxied.close());
    expect(await proxied.loadAdapter({ loraName: "a", absolutePath: "/a" })).toEqual({
      kind: "replica_error",
      status: 502,
      message: "<html>bad gateway</html>",
    });
  });

  it("maps vLLM's 'LoRA is not enabled' to a replica error, not an adapter rejection", async () => {
    const body = JSON.stringify({
      error: {
        message: "Call to add_lora method failed: LoRA is not enabled. Use --enable-lora to enable LoRA.",
        type: "InternalServerError",
        param: null,
        code: 500,
      },
    });
    const srv = await rawServer(() => ({ status: 500, body }));
    const client = createReplicaClient({ baseUrl: srv.url });
    cleanups.push(() => client.close());
    expect(await client.loadAdapter({ loraName: "a", absolutePath: "/a" })).toMatchObject({
      kind: "replica_error",
      status: 500,
    });
  });
});

describe("parsing", () => {
  it("parses Prometheus text with escapes, commas in labels, +Inf and timestamps", () => {
    const text = [
      "# HELP vllm:lora_requests_info Running stats on lora requests.",
      "# TYPE vllm:lora_requests_info gauge",
      'vllm:lora_requests_info{max_lora="2",running_lora_adapters="a,b",waiting_lora_adapters="a,b"} 1.7e+09',
      'weird{l="say \\"hi\\"\\\\ \\n"} +Inf 1700000000000',
      "plain 3",
      "not a sample line",
      "",
    ].join("\n");
    expect(parsePrometheusText(text)).toEqual([
      {
        name: "vllm:lora_requests_info",
        labels: { max_lora: "2", running_lora_adapters: "a,b", waiting_lora_adapters: "a,b" },
        value: 1.7e9,
      },
      { name: "weird", labels: { l: 'say "hi"\\ \n' }, value: Number.POSITIVE_INFINITY },
      { name: "plain", labels: {}, value: 3 },
    ]);
  });

  it("accepts the removed gpu_cache_usage_perc, sums engines and takes the newest LoRA series", () => {
    const text = [
      'vllm:num_requests_running{engine="0",model_name="m"} 2.0',
      'vllm:num_requests_running{engine="1",model_name="m"} 3.0',
      'vllm:num_requests_waiting{engine="0",model_name="m"} 4.0',
      'vllm:gpu_cache_usage_perc{model_name="m"} 0.25',
      'vllm:lora_requests_info{max_lora="1",running_lora_adapters="new",waiting_lora_adapters="new"} 1.7000002e+09',
      'vllm:lora_requests_info{max_lora="1",running_lora_adapters="",waiting_lora_adapters=""} 1.7000001e+09',
      'vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 5.0',
    ].join("\n");
    const m = summarizeMetrics(parsePrometheusText(text));
    expect(m).toMatchObject({
      running: 5,
      waiting: 4,
      waitingByReason: null,
      kvCacheUsage: 0.25,
      lora: { maxLora: 1, running: ["new"], waiting: ["new"], updatedAt: 1.7000002e9 },
      requestSuccessTotal: { stop: 5 },
      preemptionsTotal: null,
    });
    const current = summarizeMetrics(
      parsePrometheusText('vllm:kv_cache_usage_perc{engine="0"} 0.5\nvllm:gpu_cache_usage_perc 0.9'),
    );
    expect(current.kvCacheUsage).toBe(0.5);
  });

  it("reads current, legacy and FastAPI error bodies", () => {
    expect(
      parseErrorBody('{"error":{"message":"m","type":"NotFoundError","param":"model","code":404}}'),
    ).toEqual({
      message: "m",
      type: "NotFoundError",
      detail: null,
    });
    expect(
      parseErrorBody('{"object":"error","message":"m","type":"BadRequestError","param":null,"code":400}'),
    ).toEqual({
      message: "m",
      type: "BadRequestError",
      detail: null,
    });
    expect(parseErrorBody('{"detail":"Not Found"}')).toEqual({
      message: "Not Found",
      type: null,
      detail: "Not Found",
    });
    expect(parseErrorBody('{"error":"Unauthorized"}')).toEqual({
      message: "Unauthorized",
      type: null,
      detail: null,
    });
    expect(parseErrorBody("Success: LoRA adapter 'a' added successfully.")).toBeNull();
  });

  it("validates names and paths", () => {
    expect(validateLoraName("t42-support@v7")).toBeNull();
    expect(validateLoraName("a,b")).toMatch(/comma/);
    expect(validateLoraName("x".repeat(300))).toMatch(/longer/);
    expect(validateLoraName("tab\there")).toMatch(/whitespace/);
    expect(validateAdapterPath("/var/lib/loraplane/adapters/a")).toBeNull();
    expect(validateAdapterPath("org/repo")).toMatch(/not absolute/);
  });
});
