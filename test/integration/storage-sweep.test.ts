import { describe, expect, it } from "vitest";
import { sweepOrphanObjects } from "../../adapters/storage-sweep.ts";
import { SEEDED_BASE_MODELS } from "../../adapters/validate/base-spec.ts";
import { newId } from "../../lib/ids.ts";
import { createLogger } from "../../lib/logger.ts";
import { buildAdapter } from "../fixtures/generate.ts";
import { adapterForm, useHarness } from "../harness.ts";

const h = useHarness();
const silent = createLogger({ level: "silent" });
const BASE = SEEDED_BASE_MODELS.find((b) => b.id === "llama-3.1-8b-instruct-awq") ?? SEEDED_BASE_MODELS[0];

describe("storage hygiene", () => {
  it("deletes the files of an upload that died before its version row, and keeps every version's files", async () => {
    const tenant = await h.newTenant();
    const token = await tenant.token();
    const created = await h.request<{ id: string }>("POST", "/v1/adapters", {
      token,
      body: { name: "kept", base_model: BASE?.id },
    });
    const uploaded = await h.request("POST", "/v1/adapters/kept/versions", {
      token,
      body: adapterForm(buildAdapter(BASE!, { rank: 8 })),
    });
    expect(uploaded.status).toBe(201);
    // What a crash between the S3 upload and the insert leaves: files under a version id no row has.
    const orphanPrefix = `tenants/${tenant.id}/adapters/${created.body.id}/${newId("ver")}/`;
    await h.deps.store.put(`${orphanPrefix}adapter_model.safetensors`, "weights", "application/octet-stream");
    await h.deps.store.put(`${orphanPrefix}adapter_config.json`, "{}", "application/json");
    const before = await h.deps.store.list(`tenants/${tenant.id}/`);
    expect(before).toHaveLength(4);

    // Within the grace period an orphan may be an upload still finishing: kept.
    expect(await sweepOrphanObjects({ ...h.deps, logger: silent })).toEqual([]);
    // Past it, the orphan goes and the version's files stay.
    const swept = await sweepOrphanObjects(
      { ...h.deps, logger: silent },
      { graceMs: 0, now: new Date(Date.now() + 1_000) },
    );
    expect(swept.sort()).toEqual([
      `${orphanPrefix}adapter_config.json`,
      `${orphanPrefix}adapter_model.safetensors`,
    ]);
    const after = await h.deps.store.list(`tenants/${tenant.id}/`);
    expect(after.sort()).toEqual(before.filter((k) => !k.startsWith(orphanPrefix)).sort());
  });

  it("asks the bucket to abort incomplete multipart uploads, and says when it cannot", async () => {
    // The test's S3 server (s3rver) implements no lifecycle rules: the answer must be false, not a throw.
    expect(await h.deps.store.ensureLifecycle()).toBe(false);
  });
});
