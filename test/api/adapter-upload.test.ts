import { createHash } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { SEEDED_BASE_MODELS } from "../../adapters/validate/base-spec.ts";
import { listVersions } from "../../db/queries/adapters.ts";
import { BROKEN_FIXTURES, buildAdapter, picklePayload, tinyBase } from "../fixtures/generate.ts";
import { adapterForm, type TestTenant, useHarness } from "../harness.ts";

const h = useHarness();

interface VersionDto {
  version: number;
  status: string;
  sha256: string;
  size_bytes: number;
  rank: number;
  alpha: number;
  target_modules: string[];
  dtype: string;
}
interface ProblemDto {
  status: number;
  code: string;
  detail: string;
  errors?: { path: string; message: string }[];
}

const TINY = tinyBase(SEEDED_BASE_MODELS[0] ?? expect.unreachable());
const TINY_ID = "tiny-qwen";

async function newAdapter(tenant: TestTenant, name: string, baseModel: string) {
  const res = await h.request<{ id: string }>("POST", "/v1/adapters", {
    token: await tenant.token(),
    body: { name, base_model: baseModel },
  });
  expect(res.status).toBe(201);
  return res.body.id;
}

async function objectsOf(tenant: TestTenant, adapterId: string) {
  return h.deps.store.list(`tenants/${tenant.id}/adapters/${adapterId}/`);
}

beforeAll(async () => {
  // A scaled-down Qwen base so that each broken fixture builds and uploads in milliseconds.
  const res = await h.request("POST", "/admin/base-models", {
    token: await h.adminToken(),
    body: {
      id: TINY_ID,
      hf_name: TINY.hfName,
      quantization: "awq",
      architecture: TINY.architecture,
      lora: { max_rank: 64, target_modules: TINY.loraTargetModules },
      price: { input_per_mtok_usd: 0.1, output_per_mtok_usd: 0.3 },
    },
  });
  expect(res.status).toBe(201);
});

describe("uploading valid adapters", () => {
  it.each(SEEDED_BASE_MODELS.map((b) => [b.id, b] as const))(
    "accepts a real-shape q,v rank-8 adapter for %s and reports what it is",
    async (baseId, base) => {
      const tenant = await h.newTenant();
      const adapterId = await newAdapter(tenant, "real", baseId);
      const files = buildAdapter(base, { rank: 8, alpha: 16, dtype: "F16" });
      const res = await h.request<VersionDto>("POST", "/v1/adapters/real/versions", {
        token: await tenant.token(),
        body: adapterForm(files),
      });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      expect(res.body).toMatchObject({
        version: 1,
        status: "ready",
        rank: 8,
        alpha: 16,
        target_modules: ["q_proj", "v_proj"],
        dtype: "F16",
        size_bytes: files.model.length,
        sha256: createHash("sha256").update(files.model).digest("hex"),
      });
      expect((await objectsOf(tenant, adapterId)).sort()).toEqual([
        expect.stringMatching(/\/ver_[0-9a-z]+\/adapter_config\.json$/),
        expect.stringMatching(/\/ver_[0-9a-z]+\/adapter_model\.safetensors$/),
      ]);
    },
  );

  it("stores the weights byte-for-byte under a per-version key", async () => {
    const tenant = await h.newTenant();
    await newAdapter(tenant, "bytes", TINY_ID);
    const files = buildAdapter(TINY, {
      rank: 16,
      dtype: "BF16",
      targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    });
    const res = await h.request<VersionDto>("POST", "/v1/adapters/bytes/versions", {
      token: await tenant.token(),
      body: adapterForm(files),
    });
    expect(res.status).toBe(201);
    expect(res.body.target_modules).toHaveLength(7);
    const [row] = await listVersions(h.deps.db, {
      tenantId: tenant.id,
      adapterId: (
        await h.request<{ id: string }>("GET", "/v1/adapters/bytes", { token: await tenant.token() })
      ).body.id,
    });
    const stream = await h.deps.store.get(row?.objectKey ?? "");
    const chunks: Buffer[] = [];
    for await (const chunk of stream ?? []) {
      chunks.push(chunk as Buffer);
    }
    expect(Buffer.concat(chunks).equals(files.model)).toBe(true);
  });

  it("numbers versions 1, 2, 3 even when uploads race", async () => {
    const tenant = await h.newTenant();
    await newAdapter(tenant, "racy", TINY_ID);
    const token = await tenant.token();
    const results = await Promise.all(
      [1, 2, 3].map((seed) =>
        h.request<VersionDto>("POST", "/v1/adapters/racy/versions", {
          token,
          body: adapterForm(buildAdapter(TINY, { seed })),
        }),
      ),
    );
    expect(results.map((r) => r.status)).toEqual([201, 201, 201]);
    expect(results.map((r) => r.body.version).sort()).toEqual([1, 2, 3]);
    const listed = await h.request<{ data: VersionDto[] }>("GET", "/v1/adapters/racy/versions", { token });
    expect(listed.body.data.map((v) => v.version)).toEqual([3, 2, 1]);
    const adapter = await h.request<{ latest_version: number }>("GET", "/v1/adapters/racy", { token });
    expect(adapter.body.latest_version).toBe(3);
  });
});

describe.each(BROKEN_FIXTURES.map((f) => [f.name, f] as const))(
  "uploading a broken adapter: %s",
  (_name, fixture) => {
    it("is refused with 422 naming the problem, leaving no version row and no object", async () => {
      const tenant = await h.newTenant();
      const adapterId = await newAdapter(tenant, "broken", TINY_ID);
      const res = await h.request<ProblemDto>("POST", "/v1/adapters/broken/versions", {
        token: await tenant.token(),
        body: adapterForm(fixture.build(TINY)),
      });
      expect(res.status).toBe(422);
      expect(res.headers.get("content-type")).toContain("application/problem+json");
      const lines = (res.body.errors ?? []).map((e) => `${e.path}: ${e.message}`);
      expect(
        lines.some((line) => fixture.expect.test(line)),
        lines.join("\n"),
      ).toBe(true);
      expect(await listVersions(h.deps.db, { tenantId: tenant.id, adapterId })).toEqual([]);
      expect(await objectsOf(tenant, adapterId)).toEqual([]);
    });
  },
);

describe("upload requests that are not a valid upload", () => {
  it("refuses a pickle sent with a .bin name before storing it", async () => {
    const tenant = await h.newTenant();
    const adapterId = await newAdapter(tenant, "pickled", TINY_ID);
    const res = await h.request<ProblemDto>("POST", "/v1/adapters/pickled/versions", {
      token: await tenant.token(),
      body: adapterForm({
        config: buildAdapter(TINY).config,
        model: picklePayload(),
        modelFilename: "adapter_model.bin",
      }),
    });
    expect(res.status).toBe(422);
    expect(res.body.errors?.[0]?.message).toMatch(/runs code/);
    expect(await objectsOf(tenant, adapterId)).toEqual([]);
  });

  it("names a missing part", async () => {
    const tenant = await h.newTenant();
    await newAdapter(tenant, "half", TINY_ID);
    const res = await h.request<ProblemDto>("POST", "/v1/adapters/half/versions", {
      token: await tenant.token(),
      body: adapterForm({ config: buildAdapter(TINY).config }),
    });
    expect(res.status).toBe(422);
    expect(res.body.errors).toEqual([{ path: "adapter_model", message: "part is missing" }]);
  });

  it("refuses an unknown part and a JSON body with 400", async () => {
    const tenant = await h.newTenant();
    await newAdapter(tenant, "odd", TINY_ID);
    const form = adapterForm(buildAdapter(TINY));
    form.append("readme", new Blob(["hi"]), "README.md");
    const token = await tenant.token();
    const unknown = await h.request<ProblemDto>("POST", "/v1/adapters/odd/versions", { token, body: form });
    expect(unknown.status).toBe(400);
    expect(unknown.body.detail).toMatch(/unknown part 'readme'/);
    const json = await h.request<ProblemDto>("POST", "/v1/adapters/odd/versions", { token, body: { a: 1 } });
    expect(json.status).toBe(400);
    expect(json.body.detail).toMatch(/multipart\/form-data/);
  });

  it("enforces max_adapter_bytes with 413, storing nothing", async () => {
    const tenant = await h.newTenant({ limits: { maxAdapterBytes: 4096 } });
    const adapterId = await newAdapter(tenant, "big", TINY_ID);
    const files = buildAdapter(TINY, { rank: 32, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj"] });
    expect(files.model.length).toBeGreaterThan(4096);
    const res = await h.request<ProblemDto>("POST", "/v1/adapters/big/versions", {
      token: await tenant.token(),
      body: adapterForm(files),
    });
    expect(res.status).toBe(413);
    expect(res.body.code).toBe("max_adapter_bytes_exceeded");
    expect(await objectsOf(tenant, adapterId)).toEqual([]);
  });

  it("leaves nothing behind when the client disconnects mid-upload", async () => {
    const tenant = await h.newTenant();
    const adapterId = await newAdapter(tenant, "cut", TINY_ID);
    const files = buildAdapter(TINY, {
      rank: 64,
      targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    });
    const encodedForm = new Response(adapterForm(files));
    const contentType = encodedForm.headers.get("content-type") ?? "";
    const encoded = new Uint8Array(await encodedForm.arrayBuffer());
    const client = new AbortController();
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= encoded.length / 2) {
          client.abort();
          controller.error(new Error("client went away"));
          return;
        }
        controller.enqueue(encoded.subarray(sent, sent + 16_384));
        sent += 16_384;
      },
    });
    const res = await h.app.request("/v1/adapters/cut/versions", {
      method: "POST",
      body,
      duplex: "half",
      signal: client.signal,
      headers: {
        authorization: `Bearer ${await tenant.token()}`,
        "content-type": contentType,
      },
    } as RequestInit);
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(await listVersions(h.deps.db, { tenantId: tenant.id, adapterId })).toEqual([]);
    expect(await objectsOf(tenant, adapterId)).toEqual([]);
  });
});
