import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { createReplicaSim, type RunningReplicaSim } from "../../infra/replica-sim/index.ts";
import { FAST_LATENCY, removeAdapterRoot, writeAdapter } from "../../test/conformance/harness.ts";
import type { ReplicaClient } from "../replica-client.ts";
import { createReplicaClient, isLostAdapter, replicaRequestBody } from "./index.ts";

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) {
    await c();
  }
});
afterAll(removeAdapterRoot);

async function simClient(
  options: Omit<Parameters<typeof createReplicaSim>[0], "engine"> = {},
): Promise<{ client: ReplicaClient; running: RunningReplicaSim }> {
  const sim = createReplicaSim({
    engine: "sglang",
    servedModelNames: ["base"],
    maxLoras: 1,
    maxCpuLoras: 2,
    ...options,
    latency: FAST_LATENCY,
  });
  const running = await sim.start(0);
  const client = createReplicaClient({
    baseUrl: `${running.url}/`,
    ...(options.apiKey !== undefined && { apiKey: options.apiKey }),
  });
  cleanups.push(
    () => running.close(),
    () => client.close(),
  );
  return { client, running };
}

interface Seen {
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
}

/** An HTTP server answering every request with `reply`: the exact answers SGLang's source gives. */
async function rawServer(
  reply: (req: Seen) => { status: number; body: unknown },
): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server: Server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => {
      body += c.toString("utf8");
    });
    req.on("end", () => {
      const s = { url: req.url ?? "", headers: req.headers, body };
      seen.push(s);
      const r = reply(s);
      res.writeHead(r.status, { "content-type": "application/json" });
      res.end(JSON.stringify(r.body));
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

const failed = (message: string) => ({
  status: 400,
  body: { success: false, error_message: message, loaded_adapters: {} },
});

describe("SGLang replica client against the simulator", () => {
  it("loads, lists and unloads an adapter, and reports a refusal by kind", async () => {
    const { client } = await simClient();
    const dir = await writeAdapter();
    expect(await client.loadAdapter({ loraName: "t1-support@v1", absolutePath: dir })).toEqual({
      kind: "ok",
    });
    expect(await client.loadAdapter({ loraName: "t1-support@v1", absolutePath: dir })).toMatchObject({
      kind: "already_loaded",
    });
    const models = await client.listModels();
    expect(models).toMatchObject({
      kind: "ok",
      value: {
        base: [{ id: "base", parent: null }],
        adapters: [{ id: "t1-support@v1", root: dir, parent: "base" }],
      },
    });
    expect(await client.loadAdapter({ loraName: "gone", absolutePath: `${dir}-missing` })).toMatchObject({
      kind: "not_found",
    });
    expect(await client.unloadAdapter("t1-support@v1")).toEqual({ kind: "ok" });
    expect(await client.unloadAdapter("t1-support@v1")).toMatchObject({ kind: "not_found" });
    const after = await client.listModels();
    expect(after.kind === "ok" && after.value.adapters).toEqual([]);
  });

  it("reads health, the queues from sglang:* metrics, and the flags from /server_info", async () => {
    const { client } = await simClient();
    expect(await client.health()).toEqual({ kind: "ok" });
    const metrics = await client.metrics();
    expect(metrics).toMatchObject({ kind: "ok", value: { running: 0, waiting: 0, lora: null } });
    const caps = await client.capabilities();
    expect(caps).toMatchObject({
      kind: "ok",
      value: { runtimeLoraUpdating: true, servedModels: ["base"], maxLoras: 1, version: expect.any(String) },
    });
  });

  it("serves a request rewritten for SGLang and recognises a restarted replica's answer as a lost adapter", async () => {
    const { client, running } = await simClient();
    await client.loadAdapter({ loraName: "m", absolutePath: await writeAdapter() });
    const ask = { model: "client-name", messages: [{ role: "user", content: "hi" }], max_tokens: 2 };
    const served = await fetch(`${running.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: replicaRequestBody(ask, "m", "base"),
    });
    expect(served.status).toBe(200);
    const unknown = await fetch(`${running.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: replicaRequestBody(ask, "never-loaded", "base"),
    });
    const text = await unknown.text();
    expect(isLostAdapter(unknown.status, text, "never-loaded")).toBe(true);
    expect(isLostAdapter(unknown.status, text, null)).toBe(false);
  });
});

describe("SGLang replica client, answer by answer", () => {
  it.each([
    ["Failed to load LoRA adapter a because it is already loaded", "already_loaded"],
    ["LoRA with name a already exists. Loaded LoRAs: odict_keys(['a'])", "already_loaded"],
    ["LoRA is not enabled. Please set `--enable-lora` to enable LoRA.", "runtime_updates_disabled"],
    ["[Errno 2] No such file or directory: '/x/adapter_config.json'", "not_found"],
    ["Repo id must be in the form 'repo_name' or 'namespace/repo_name': '/x'.", "not_found"],
    [
      "LoRA adapter a with rank 64 is incompatible with the current LoRA memory pool configuration.",
      "adapter_rejected",
    ],
  ])("classifies a load refused with %j as %s", async (message, kind) => {
    const { url } = await rawServer(() => failed(message));
    const client = createReplicaClient({ baseUrl: url });
    cleanups.push(() => client.close());
    expect(await client.loadAdapter({ loraName: "a", absolutePath: "/x" })).toMatchObject({ kind });
  });

  it("sends load and unload with the admin key, every other call with the API key", async () => {
    const { url, seen } = await rawServer((req) =>
      req.url === "/v1/models"
        ? { status: 200, body: { data: [] } }
        : { status: 200, body: { success: true } },
    );
    const client = createReplicaClient({ baseUrl: url, apiKey: "user-key", adminApiKey: "admin-key" });
    cleanups.push(() => client.close());
    await client.loadAdapter({ loraName: "a", absolutePath: "/x" });
    await client.unloadAdapter("a");
    await client.listModels();
    expect(seen.map((s) => [s.url, s.headers.authorization])).toEqual([
      ["/load_lora_adapter", "Bearer admin-key"],
      ["/unload_lora_adapter", "Bearer admin-key"],
      ["/v1/models", "Bearer user-key"],
    ]);
    expect(JSON.parse(seen[0]?.body ?? "")).toEqual({ lora_name: "a", lora_path: "/x" });
  });

  it("refuses a name SGLang could not address (a colon) before sending anything", async () => {
    const { url, seen } = await rawServer(() => ({ status: 200, body: { success: true } }));
    const client = createReplicaClient({ baseUrl: url });
    cleanups.push(() => client.close());
    expect(await client.loadAdapter({ loraName: "a:b", absolutePath: "/x" })).toMatchObject({
      kind: "invalid_input",
    });
    expect(seen).toEqual([]);
  });

  it("reports a refused key as unauthorized and an unknown unload as not_found", async () => {
    const denied = await rawServer(() => ({ status: 401, body: { error: "Unauthorized" } }));
    const client = createReplicaClient({ baseUrl: denied.url });
    cleanups.push(() => client.close());
    expect(await client.unloadAdapter("a")).toEqual({ kind: "unauthorized", status: 401 });
    const unknown = await rawServer(() =>
      failed("LoRA with name a does not exist. Loaded LoRAs: odict_keys([])"),
    );
    const other = createReplicaClient({ baseUrl: unknown.url });
    cleanups.push(() => other.close());
    expect(await other.unloadAdapter("a")).toMatchObject({ kind: "not_found" });
  });
});

describe("SGLang lost adapters", () => {
  it.each([
    ["Got LoRA adapter that has never been loaded: l1\nAll loaded adapters: dict_keys([]).", true],
    ["The following requested LoRA adapters are not loaded: l1\nLoaded adapters: dict_keys([]).", true],
    ["Failed to implicitly load LoRA adapter l1: [Errno 2] No such file or directory", true],
    ["Requested token count exceeds the model's maximum context length", false],
  ])("reads a 400 %j as lost: %s", (message, lost) => {
    const body = JSON.stringify({
      object: "error",
      message,
      type: "BadRequestError",
      param: null,
      code: 400,
    });
    expect(isLostAdapter(400, body, "l1")).toBe(lost);
    expect(isLostAdapter(500, body, "l1")).toBe(false);
  });
});

describe("SGLang request rewrite", () => {
  it("names the adapter as <base>:<adapter>, drops a client's lora_path, and asks for usage on every chunk", () => {
    const body = JSON.parse(
      replicaRequestBody(
        { model: "mine", lora_path: "another-tenants-adapter", stream: true },
        "lora-1",
        "llama",
      ),
    );
    expect(body).toEqual({
      model: "llama:lora-1",
      stream: true,
      stream_options: { include_usage: true, continuous_usage_stats: true },
    });
    expect(JSON.parse(replicaRequestBody({ model: "llama", lora_path: "x" }, null, "llama"))).toEqual({
      model: "llama",
    });
  });
});
