import { existsSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { CacheDto, LoadAdapterResponse } from "../../adapters/agent/schema.ts";
import { useHarness } from "../harness.ts";
import {
  AGENT_TOKEN,
  replicaAdapters,
  type StoredVersion,
  startReplica,
  startTestAgent,
  uploadVersion,
} from "./world.ts";

const h = useHarness();

interface ErrorBody {
  error: { code: string; message: string };
}

let good: StoredVersion[] = [];
let rank16: StoredVersion;

beforeAll(async () => {
  const tenant = await h.newTenant();
  [rank16, ...good] = await Promise.all([
    uploadVersion(h, tenant, "wide", { rank: 16 }),
    ...[1, 2, 3, 4].map((seed) => uploadVersion(h, tenant, `a${seed}`, { seed })),
  ]);
});

const v = (i: number) => good[i] ?? expect.unreachable(`version ${i} was not uploaded`);
const body = (name: string, version: StoredVersion) => ({ lora_name: name, ...version });

describe("a load that fails leaves nothing behind", () => {
  it.each([
    ["weights", "object_key"],
    ["adapter_config.json", "config_object_key"],
  ] as const)(
    "answers 422 object_missing naming the key when the %s object is missing",
    async (_what, field) => {
      const { replica } = await startReplica();
      const agent = await startTestAgent(h, replica.url);
      const missing = `${v(0)[field].replace(/[^/]+$/, "")}gone/${field}.bin`;
      const res = await agent.call<ErrorBody>("POST", "/v1/adapters/load", {
        ...body("missing-v1", v(0)),
        [field]: missing,
      });
      expect(res.status).toBe(422);
      expect(res.body.error.code).toBe("object_missing");
      expect(res.body.error.message).toContain(`'${missing}' does not exist`);
      expect(await replicaAdapters(replica.url)).toEqual([]);
      expect(await agent.cacheListing()).toEqual([]);
    },
  );

  it("answers 422 digest_mismatch for a wrong sha256, registering nothing and keeping no files", async () => {
    const { replica } = await startReplica();
    const agent = await startTestAgent(h, replica.url);
    const res = await agent.call<ErrorBody>("POST", "/v1/adapters/load", {
      ...body("wrong-digest-v1", v(0)),
      sha256: "0".repeat(64),
    });
    expect(res.status).toBe(422);
    expect(res.body.error).toEqual({
      code: "digest_mismatch",
      message: `weights object '${v(0).object_key}' has sha256 ${v(0).sha256}; expected ${"0".repeat(64)}`,
    });
    expect(await replicaAdapters(replica.url)).toEqual([]);
    expect(await agent.cacheListing()).toEqual([]);
  });

  it.each([
    ["smaller", -1],
    ["larger", 1],
  ])("answers 422 digest_mismatch when the object is %s than size_bytes", async (_how, delta) => {
    const { replica } = await startReplica();
    const agent = await startTestAgent(h, replica.url);
    const res = await agent.call<ErrorBody>("POST", "/v1/adapters/load", {
      ...body("wrong-size-v1", v(0)),
      size_bytes: v(0).size_bytes + delta,
    });
    expect(res.status).toBe(422);
    expect(res.body.error.code).toBe("digest_mismatch");
    expect(res.body.error.message).toContain(v(0).object_key);
    expect(await replicaAdapters(replica.url)).toEqual([]);
    expect(await agent.cacheListing()).toEqual([]);
  });

  it("answers 422 with vLLM's message when the replica rejects the adapter (rank above max_lora_rank)", async () => {
    const { replica } = await startReplica();
    const agent = await startTestAgent(h, replica.url);
    const res = await agent.call<ErrorBody>("POST", "/v1/adapters/load", body("wide-v1", rank16));
    expect(res.status).toBe(422);
    expect(res.body.error).toEqual({
      code: "adapter_rejected",
      message: "Call to add_lora method failed: LoRA rank 16 is greater than max_lora_rank 8.",
    });
    expect(await replicaAdapters(replica.url)).toEqual([]);
    expect(await agent.cacheListing()).toEqual([]);
    expect((await agent.call<CacheDto>("GET", "/v1/cache")).body).toMatchObject({ bytes: 0, entries: [] });
  });

  it("answers 502 replica_unreachable when the replica is down, before downloading anything", async () => {
    const { replica } = await startReplica();
    await replica.close();
    const agent = await startTestAgent(h, replica.url);
    const res = await agent.call<ErrorBody>("POST", "/v1/adapters/load", body("down-v1", v(0)));
    expect(res.status).toBe(502);
    expect(res.body.error.code).toBe("replica_unreachable");
    expect(res.body.error.message).toMatch(/ECONNREFUSED/);
    expect(await agent.cacheListing()).toEqual([]);
  });
});

describe("the disk budget", () => {
  it("evicts the least recently used unregistered adapter to make room, and answers 507 when everything cached is registered", async () => {
    const { replica } = await startReplica();
    let clock = 1_000_000;
    const agent = await startTestAgent(h, replica.url, {
      budgetBytes: 2 * v(0).size_bytes + 20_000,
      now: () => (clock += 1_000),
    });
    const load = (name: string, i: number) =>
      agent.call<LoadAdapterResponse & ErrorBody>("POST", "/v1/adapters/load", body(name, v(i)));
    expect((await load("a-v1", 0)).status).toBe(200);
    expect((await load("b-v1", 1)).status).toBe(200);
    // The replica forgets both (as after a restart): their files are now only cache.
    for (const name of ["a-v1", "b-v1"]) {
      const res = await fetch(`${replica.url}/v1/unload_lora_adapter`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ lora_name: name }),
      });
      expect(res.status).toBe(200);
    }

    expect((await load("c-v1", 2)).status).toBe(200);
    expect(await agent.cacheListing()).toEqual(["b-v1", "c-v1"]);
    expect((await load("d-v1", 3)).status).toBe(200);
    expect(await agent.cacheListing()).toEqual(["c-v1", "d-v1"]);

    const full = await load("a-v1", 0);
    expect(full.status).toBe(507);
    expect(full.body.error.code).toBe("insufficient_storage");
    expect(full.body.error.message).toMatch(/no room for 'a-v1'.*2 registered on the replica/);
    expect(await agent.cacheListing()).toEqual(["c-v1", "d-v1"]);
    expect((await replicaAdapters(replica.url)).map((c) => c.id)).toEqual(["c-v1", "d-v1"]);
    const cache = await agent.call<CacheDto>("GET", "/v1/cache");
    expect(cache.body.bytes).toBeLessThanOrEqual(cache.body.budget_bytes);
  });

  it("answers 507 for an adapter larger than the whole budget", async () => {
    const { replica } = await startReplica();
    const agent = await startTestAgent(h, replica.url, { budgetBytes: 1_000 });
    const res = await agent.call<ErrorBody>("POST", "/v1/adapters/load", body("huge-v1", v(0)));
    expect(res.status).toBe(507);
    expect(res.body.error.message).toContain("whole adapter cache budget is 1000 bytes");
    expect(await agent.cacheListing()).toEqual([]);
  });
});

describe("requests the agent refuses", () => {
  it.each([
    ["no Authorization header", null],
    ["a wrong token", "not-the-agent-token-at-all"],
    ["the token with a character missing", AGENT_TOKEN.slice(0, -1)],
  ])("answers 401 with %s and does nothing", async (_case, token) => {
    const { replica } = await startReplica();
    const agent = await startTestAgent(h, replica.url);
    const load = await agent.call<ErrorBody>("POST", "/v1/adapters/load", body("auth-v1", v(0)), token);
    expect(load.status).toBe(401);
    expect(load.body.error.code).toBe("unauthorized");
    expect((await agent.call("GET", "/v1/cache", undefined, token)).status).toBe(401);
    expect((await agent.call("POST", "/v1/adapters/unload", { lora_name: "auth-v1" }, token)).status).toBe(
      401,
    );
    expect((await agent.call("GET", "/healthz", undefined, token)).status).toBe(200);
    expect(await replicaAdapters(replica.url)).toEqual([]);
    expect(await agent.cacheListing()).toEqual([]);
  });

  it.each(["../x", "a/b", "a,b", "..", ".hidden", "a..b", "a b", "x".repeat(129), "", "/abs"])(
    "answers 400 for the LoRA name %j on load and unload, touching no file",
    async (name) => {
      const { replica } = await startReplica();
      const agent = await startTestAgent(h, replica.url);
      const load = await agent.call<ErrorBody>("POST", "/v1/adapters/load", body(name, v(0)));
      expect(load.status).toBe(400);
      expect(load.body.error.code).toBe("invalid_request");
      expect(load.body.error.message).toMatch(/^lora_name: /);
      const unload = await agent.call<ErrorBody>("POST", "/v1/adapters/unload", { lora_name: name });
      expect(unload.status).toBe(400);
      expect(await agent.cacheListing()).toEqual([]);
      expect(existsSync(join(agent.cacheDir, "..", "x"))).toBe(false);
      expect(await replicaAdapters(replica.url)).toEqual([]);
    },
  );

  it.each([
    ["object_key", "../../etc/passwd"],
    ["object_key", "/tenants/x/adapter_model.safetensors"],
    ["config_object_key", "tenants/x/../y/adapter_config.json"],
    ["sha256", "abc"],
    ["size_bytes", 0],
  ])("answers 400 naming %s when it is %j", async (field, value) => {
    const { replica } = await startReplica();
    const agent = await startTestAgent(h, replica.url);
    const res = await agent.call<ErrorBody>("POST", "/v1/adapters/load", {
      ...body("ok-v1", v(0)),
      [field]: value,
    });
    expect(res.status).toBe(400);
    expect(res.body.error.message).toMatch(new RegExp(`^${field}: `));
    expect(await agent.cacheListing()).toEqual([]);
  });

  it("answers 400 for a body that is not JSON and 404 for an unload of a name it never saw", async () => {
    const { replica } = await startReplica();
    const agent = await startTestAgent(h, replica.url);
    const bad = await agent.call<ErrorBody>("POST", "/v1/adapters/load", "{not json");
    expect(bad.status).toBe(400);
    const unknown = await agent.call<ErrorBody>("POST", "/v1/adapters/unload", { lora_name: "never-v1" });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toEqual({
      code: "not_found",
      message: "'never-v1' is neither registered on the replica nor in this agent's cache",
    });
  });
});
