import { rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { vllm } from "../../engines/index.ts";
import type { ReplicaSimOptions, VersionProfile } from "../../infra/replica-sim/index.ts";
import {
  type AdapterFixture,
  freePort,
  isReal,
  openTarget,
  PROFILES,
  postJson,
  removeAdapterRoot,
  type SseEvent,
  sleep,
  stream,
  type Target,
  uniqueName,
  waitFor,
  writeAdapter,
} from "./harness.ts";

// vllm-replica-protocol.md §10, item by item. Runs against the simulator, once per version profile,
// unless VLLM_CONFORMANCE_URL names a real replica (see harness.ts), which runs once with the profile
// VLLM_CONFORMANCE_PROFILE declares. The assertions are the same for the simulator and a real vLLM;
// where releases differ (infra/replica-sim/README.md, "Version profiles") they follow `t.profile`.

let t: Target;

/** A further target (a simulator with other flags, or the real replica) under the suite's profile. */
function open(options: ReplicaSimOptions = {}): Promise<Target> {
  return openTarget({ profile: t.profile, ...options });
}

/** How a rejected load (engine-side add_lora failure) answers, per release. */
const LOAD_REJECTION: Record<VersionProfile, { status: number; type: string }> = {
  "v0.11": { status: 400, type: "BadRequestError" },
  current: { status: 500, type: "InternalServerError" },
};

afterAll(removeAdapterRoot);

async function loadNew(prefix: string, fixture: AdapterFixture = {}, target: Target = t) {
  const name = uniqueName(prefix);
  const path = await writeAdapter(fixture);
  const res = await target.client.loadAdapter({ loraName: name, absolutePath: path });
  expect(res).toEqual({ kind: "ok" });
  return { name, path };
}

function chunks(events: readonly SseEvent[]): Record<string, unknown>[] {
  return events.flatMap((e) => (e.data === "[DONE]" ? [] : [e.data]));
}

function choicesOf(chunk: Record<string, unknown>): Record<string, unknown>[] {
  return (chunk.choices as Record<string, unknown>[] | undefined) ?? [];
}

const chatBody = (model: string | undefined, maxTokens: number) => ({
  ...(model === undefined ? {} : { model }),
  messages: [{ role: "user", content: "Say something." }],
  max_tokens: maxTokens,
  ignore_eos: true,
});

describe.each(PROFILES)("profile %s", (profile) => {
  beforeAll(async () => {
    t = await openTarget({ profile });
  });

  afterAll(async () => {
    await t?.close();
  });

  describe("10.1 env flag unset: load and unload → 404 {detail: Not Found}", () => {
    const otherUrl = process.env.VLLM_CONFORMANCE_URL_NO_RUNTIME_LORA;
    it.skipIf(isReal && !otherUrl)(
      "10.1 both routes are absent and the client reports runtime updates disabled",
      async () => {
        const off = isReal
          ? { url: otherUrl ?? "", apiKey: process.env.VLLM_CONFORMANCE_API_KEY, close: async () => {} }
          : await open({ allowRuntimeLoraUpdating: false });
        try {
          const path = await writeAdapter();
          const load = await postJson(off, "/v1/load_lora_adapter", { lora_name: "x", lora_path: path });
          expect(load.status).toBe(404);
          expect(load.json).toEqual({ detail: "Not Found" });
          const unload = await postJson(off, "/v1/unload_lora_adapter", { lora_name: "x" });
          expect(unload.status).toBe(404);
          expect(unload.json).toEqual({ detail: "Not Found" });
          const client = vllm.createReplicaClient({ baseUrl: off.url, apiKey: off.apiKey });
          try {
            expect(await client.loadAdapter({ loraName: "x", absolutePath: path })).toEqual({
              kind: "runtime_updates_disabled",
            });
            const caps = await client.capabilities();
            expect(caps.kind === "ok" && caps.value.runtimeLoraUpdating).toBe(false);
          } finally {
            await client.close();
          }
        } finally {
          await off.close();
        }
        const onCaps = await t.client.capabilities();
        expect(onCaps.kind === "ok" && onCaps.value.runtimeLoraUpdating).toBe(true);
      },
    );
  });

  describe("10.2 load success → 200 plain text; listed last in /v1/models with root = path, parent = base", () => {
    it("10.2 answers plain text and lists the adapter last, as sent", async () => {
      const name = uniqueName("ok");
      const path = await writeAdapter();
      const res = await postJson(t, "/v1/load_lora_adapter", { lora_name: name, lora_path: path });
      expect(res.status).toBe(200);
      expect(res.text).toBe(`Success: LoRA adapter '${name}' added successfully.`);
      expect(res.json).toBeUndefined();
      expect(res.contentType ?? "").not.toContain("json");

      const models = (await (await fetch(`${t.url}/v1/models`, { headers: auth() })).json()) as {
        object: string;
        data: Record<string, unknown>[];
      };
      expect(models.object).toBe("list");
      const last = models.data.at(-1);
      expect(last).toMatchObject({
        id: name,
        object: "model",
        owned_by: "vllm",
        root: path,
        parent: t.baseName,
      });
      expect(last?.max_model_len).toBeNull();
      const firstLora = models.data.findIndex((m) => m.parent !== null);
      expect(
        models.data
          .slice(0, firstLora)
          .every((m) => m.parent === null && typeof m.max_model_len === "number"),
      ).toBe(true);
      expect(models.data[0]?.id).toBe(t.baseName);

      const listed = await t.client.listModels();
      expect(listed.kind === "ok" && listed.value.adapters.at(-1)).toEqual({
        id: name,
        root: path,
        parent: t.baseName,
        maxModelLen: null,
      });
    });

    it("10.2 permission ids are regenerated on every /v1/models call", async () => {
      const ids = async () => {
        const body = (await (await fetch(`${t.url}/v1/models`, { headers: auth() })).json()) as {
          data: { permission: { id: string }[] }[];
        };
        return body.data.map((m) => m.permission[0]?.id);
      };
      const a = await ids();
      const b = await ids();
      expect(a[0]).toMatch(/^modelperm-[0-9a-f]+$/);
      expect(a[0]).not.toBe(b[0]);
    });
  });

  describe("10.3 duplicate load → 400 InvalidUserInput; with load_inplace → 200 and the id is kept (v0.11: no load_inplace)", () => {
    it("10.3 refuses a duplicate name and accepts it in place without moving it", async () => {
      const { name, path } = await loadNew("dup");
      await loadNew("after-dup");
      const again = await postJson(t, "/v1/load_lora_adapter", { lora_name: name, lora_path: path });
      expect(again.status).toBe(400);
      // load_inplace (2026-01) came with the hint; v0.11 has neither.
      const hint =
        t.profile === "current"
          ? " If you want to load the adapter in place, set 'load_inplace' to True."
          : "";
      expect(again.json).toEqual({
        error: {
          message: `The lora adapter '${name}' has already been loaded.${hint}`,
          type: "InvalidUserInput",
          param: null,
          code: 400,
        },
      });
      expect(await t.client.loadAdapter({ loraName: name, absolutePath: path })).toMatchObject({
        kind: "already_loaded",
      });

      const before = await modelIds();
      const inplace = await postJson(t, "/v1/load_lora_adapter", {
        lora_name: name,
        lora_path: path,
        load_inplace: true,
      });
      if (t.profile === "v0.11") {
        // The field is unknown to v0.11 and ignored: still a duplicate.
        expect(inplace.status).toBe(400);
        expect(await modelIds()).toEqual(before);
        return;
      }
      expect(inplace.status).toBe(200);
      expect(inplace.text).toBe(`Success: LoRA adapter '${name}' added successfully.`);
      expect(await modelIds()).toEqual(before);
    });
  });

  describe("10.4 missing path → 404 Loading lora <n> failed: No adapter found for <path>", () => {
    const cases: [string, () => Promise<string>][] = [
      ["a directory that does not exist", async () => join(await writeAdapter(), "missing")],
      ["a directory without adapter_config.json", () => writeAdapter({ noConfig: true })],
      ["a relative path (taken for a Hub id, offline)", async () => `nonexistent-org/${uniqueName("repo")}`],
    ];
    it.each(cases)("10.4 %s", async (_label, makePath) => {
      const name = uniqueName("missing");
      const path = await makePath();
      const res = await postJson(t, "/v1/load_lora_adapter", { lora_name: name, lora_path: path });
      expect(res.status).toBe(404);
      expect(res.json).toEqual({
        error: {
          message: `Loading lora ${name} failed: No adapter found for ${path}`,
          type: "NotFoundError",
          param: null,
          code: 404,
        },
      });
      expect(await modelIds()).not.toContain(name);
      if (path.startsWith("/")) {
        expect(await t.client.loadAdapter({ loraName: name, absolutePath: path })).toMatchObject({
          kind: "not_found",
        });
      } else {
        expect(await t.client.loadAdapter({ loraName: name, absolutePath: path })).toMatchObject({
          kind: "invalid_input",
        });
      }
    });
  });

  describe("10.5 rank too high, DoRA, modules_to_save, bias or bad JSON → 500 (v0.11: 400) Call to add_lora method failed", () => {
    const cases: [string, () => AdapterFixture, (dir: string) => string][] = [
      [
        "rank above max_lora_rank",
        () => ({ config: { r: 1024 } }),
        () => `LoRA rank 1024 is greater than max_lora_rank ${t.maxLoraRank}.`,
      ],
      ["DoRA", () => ({ config: { use_dora: true } }), () => "vLLM does not yet support DoRA."],
      ["modules_to_save", () => ({ config: { modules_to_save: ["lm_head"] } }), () => "modules_to_save"],
      ["bias", () => ({ config: { bias: "all" } }), () => "bias"],
      ["bad JSON", () => ({ rawConfig: "{ not json" }), () => ""],
      [
        "missing lora_alpha",
        () => ({ rawConfig: JSON.stringify({ r: 8, target_modules: ["q_proj"] }) }),
        () => "Missing required configuration fields",
      ],
      ["no weights file", () => ({ weights: "none" }), (dir) => `${dir} doesn't contain tensors`],
    ];
    it.each(cases)("10.5 %s", async (_label, fixture, expected) => {
      const name = uniqueName("bad");
      const dir = await writeAdapter(fixture());
      const res = await postJson(t, "/v1/load_lora_adapter", { lora_name: name, lora_path: dir });
      const rejection = LOAD_REJECTION[t.profile];
      expect(res.status).toBe(rejection.status);
      const err = (res.json as { error: { message: string; type: string; code: number } }).error;
      expect(err.type).toBe(rejection.type);
      expect(err.code).toBe(res.status);
      expect(err.message.startsWith("Call to add_lora method failed: ")).toBe(true);
      expect(err.message).toContain(expected(dir));
      expect(await modelIds()).not.toContain(name);

      const viaClient = await t.client.loadAdapter({ loraName: uniqueName("bad"), absolutePath: dir });
      expect(viaClient).toMatchObject({ kind: "adapter_rejected", status: res.status });
    });
  });

  describe("10.6 unload: known → 200 plain text; unknown → 404; empty name → 400", () => {
    it("10.6 unloads a known adapter and refuses unknown and empty names", async () => {
      const { name } = await loadNew("unload");
      const ok = await postJson(t, "/v1/unload_lora_adapter", { lora_name: name });
      expect(ok.status).toBe(200);
      expect(ok.text).toBe(`Success: LoRA adapter '${name}' removed successfully.`);
      expect(await modelIds()).not.toContain(name);

      const unknown = await postJson(t, "/v1/unload_lora_adapter", { lora_name: name });
      expect(unknown.status).toBe(404);
      expect(unknown.json).toEqual({
        error: {
          message: `The lora adapter '${name}' cannot be found.`,
          type: "NotFoundError",
          param: null,
          code: 404,
        },
      });
      expect(await t.client.unloadAdapter(name)).toMatchObject({ kind: "not_found" });

      const empty = await postJson(t, "/v1/unload_lora_adapter", { lora_name: "" });
      expect(empty.status).toBe(400);
      expect(empty.json).toEqual({
        error: {
          message: "'lora_name' needs to be provided to unload a LoRA adapter.",
          type: "InvalidUserInput",
          param: null,
          code: 400,
        },
      });
    });
  });

  describe("10.7 unload while requests are in flight → 200; they complete with usage", () => {
    it("10.7 a stream started before the unload finishes with usage; new requests get 404", async () => {
      const { name } = await loadNew("inflight");
      let unloadStatus = 0;
      let unloading: Promise<void> | undefined;
      const res = await stream(
        t,
        "/v1/chat/completions",
        { ...chatBody(name, 150), stream_options: { include_usage: true } },
        {
          onEvent: (e) => {
            if (!unloading && e.data !== "[DONE]" && choicesOf(e.data)[0]?.finish_reason === null) {
              unloading = t.client.unloadAdapter(name).then((r) => {
                unloadStatus = r.kind === "ok" ? 200 : 0;
              });
            }
            return undefined;
          },
        },
      );
      await unloading;
      expect(unloadStatus).toBe(200);
      const all = chunks(res.events);
      const finish = all.flatMap(choicesOf).find((c) => c.finish_reason !== null);
      expect(finish?.finish_reason).toBe("length");
      expect(all.at(-1)?.usage).toMatchObject({ completion_tokens: 150 });
      expect(res.events.at(-1)?.data).toBe("[DONE]");

      const after = await postJson(t, "/v1/chat/completions", chatBody(name, 1));
      expect(after.status).toBe(404);
    });
  });

  describe("10.8 unknown model → 404, param model, message The model `X` does not exist.", () => {
    it.each([
      ["/v1/chat/completions", (m: string) => chatBody(m, 1)],
      ["/v1/completions", (m: string) => ({ model: m, prompt: "hi", max_tokens: 1 })],
      ["/tokenize", (m: string) => ({ model: m, prompt: "hi" })],
    ])("10.8 %s", async (path, body) => {
      const model = uniqueName("nope");
      const res = await postJson(t, path, body(model));
      expect(res.status).toBe(404);
      expect(res.json).toEqual({
        error: {
          message: `The model \`${model}\` does not exist.`,
          type: "NotFoundError",
          param: "model",
          code: 404,
        },
      });
    });
  });

  describe("10.9 response model = adapter name, or the first served name for base requests", () => {
    it("10.9 names the adapter, and the first served name for every way of asking for the base", async () => {
      const { name } = await loadNew("named");
      const lora = await postJson(t, "/v1/chat/completions", chatBody(name, 2));
      expect((lora.json as { model: string }).model).toBe(name);
      for (const model of [undefined, ...t.servedNames]) {
        const base = await postJson(t, "/v1/chat/completions", chatBody(model, 2));
        expect(base.status).toBe(200);
        expect((base.json as { model: string }).model).toBe(t.baseName);
      }
      const cmpl = await postJson(
        t,
        "/v1/completions",
        { model: name, prompt: "hello", max_tokens: 2 },
        {
          "X-Request-Id": "conformance-req-1",
        },
      );
      expect(cmpl.json).toMatchObject({
        id: "cmpl-conformance-req-1",
        object: "text_completion",
        model: name,
      });
    });
  });

  describe("10.10 streams: usage only when asked, one usage chunk, continuous usage", () => {
    it("10.10 without include_usage the stream has no usage at all", async () => {
      const res = await stream(t, "/v1/chat/completions", chatBody(undefined, 5), {
        headers: { "X-Request-Id": "conformance-stream-1" },
      });
      expect(res.status).toBe(200);
      expect(res.raw).not.toMatch(/^event:/m);
      const all = chunks(res.events);
      expect(all.every((c) => !("usage" in c))).toBe(true);
      expect(res.events.at(-1)?.data).toBe("[DONE]");
      expect(choicesOf(all[0] ?? {})[0]?.delta).toEqual({ role: "assistant", content: "" });
      expect(new Set(all.map((c) => `${c.id}|${c.created}|${c.model}`)).size).toBe(1);
      expect(all[0]?.id).toBe("chatcmpl-conformance-stream-1");
      expect(all[0]?.object).toBe("chat.completion.chunk");
      const text = all
        .flatMap(choicesOf)
        .map((c) => (c.delta as { content?: string } | undefined)?.content ?? "");
      expect(text.join("").length).toBeGreaterThan(0);
    });

    it("10.10 include_usage → exactly one choices:[] usage chunk, right before [DONE]", async () => {
      const res = await stream(t, "/v1/chat/completions", {
        ...chatBody(undefined, 7),
        stream_options: { include_usage: true },
      });
      const all = chunks(res.events);
      const usageChunks = all.filter((c) => "usage" in c);
      expect(usageChunks).toHaveLength(1);
      expect(all.at(-1)).toBe(usageChunks[0]);
      expect(usageChunks[0]?.choices).toEqual([]);
      const u = usageChunks[0]?.usage as {
        prompt_tokens: number;
        completion_tokens: number;
        total_tokens: number;
      };
      expect(u.completion_tokens).toBe(7);
      expect(u.total_tokens).toBe(u.prompt_tokens + 7);
      expect(res.events.at(-1)?.data).toBe("[DONE]");

      const tok = await t.client.tokenize({ messages: [{ role: "user", content: "Say something." }] });
      expect(tok.kind === "ok" && tok.value.count).toBe(u.prompt_tokens);
    });

    it("10.10 continuous_usage_stats → cumulative usage on every chunk", async () => {
      const res = await stream(t, "/v1/completions", {
        prompt: "Count with me:",
        max_tokens: 6,
        ignore_eos: true,
        stream_options: { include_usage: true, continuous_usage_stats: true },
      });
      const all = chunks(res.events);
      expect(all.length).toBeGreaterThan(2);
      expect(all.every((c) => typeof c.usage === "object" && c.usage !== null)).toBe(true);
      const completion = all.map((c) => (c.usage as { completion_tokens: number }).completion_tokens);
      expect(completion).toEqual([...completion].sort((a, b) => a - b));
      expect(completion.at(-1)).toBe(6);
      expect(
        all.filter((c) => Array.isArray(c.choices) && (c.choices as unknown[]).length === 0),
      ).toHaveLength(1);
    });

    it("10.10 stream_options without stream:true → 400", async () => {
      const res = await postJson(t, "/v1/chat/completions", {
        ...chatBody(undefined, 1),
        stream_options: { include_usage: true },
      });
      expect(res.status).toBe(400);
      expect((res.json as { error: { message: string } }).error.message).toContain(
        "Stream options can only be defined when `stream=True`.",
      );
    });
  });

  describe("10.11 more than max_loras distinct adapters at once: the extras queue without error", () => {
    it("10.11 the extra adapter waits (deferred) until a slot frees, base requests keep flowing", async () => {
      const target = isReal
        ? t
        : await open({ maxLoras: 1, maxCpuLoras: 4, latency: { decodeMsPerStep: 4 } });
      try {
        const hot = [];
        for (let i = 0; i < target.maxLoras; i++) {
          hot.push(await loadNew(`hot${i}`, {}, target));
        }
        const extra = await loadNew("extra", {}, target);
        const longTokens = isReal ? 400 : 120;
        let firstTokens = 0;
        let release: () => void = () => {};
        const allStarted = new Promise<void>((r) => {
          release = r;
        });
        const hotStreams = hot.map((a) =>
          stream(target, "/v1/chat/completions", chatBody(a.name, longTokens), {
            onEvent: (e, all) => {
              if (all.length === 2 && e.data !== "[DONE]") {
                firstTokens++;
                if (firstTokens === hot.length) {
                  release();
                }
              }
              return undefined;
            },
          }).then((r) => ({ ...r, doneAt: performance.now() })),
        );
        await allStarted;
        const sentAt = performance.now();
        const extraReq = postJson(target, "/v1/chat/completions", chatBody(extra.name, 1)).then((r) => ({
          ...r,
          at: performance.now() - sentAt,
          doneAt: performance.now(),
        }));
        // Poll while the hot streams run: the extra request shows up as waiting (current: deferred) and
        // its adapter in lora_requests_info's waiting label.
        let waiting = 0;
        let byReason: { capacity: number; deferred: number } | null = null;
        let lora: { running: string[]; waiting: string[] } | null = null;
        const seen = () =>
          waiting >= 1 &&
          (lora?.waiting ?? []).includes(extra.name) &&
          (target.profile === "v0.11" || (byReason?.deferred ?? 0) >= 1);
        for (let i = 0; i < 100 && !seen(); i++) {
          await sleep(isReal ? 50 : 5);
          const m = await target.client.metrics();
          if (m.kind === "ok") {
            waiting = m.value.waiting ?? 0;
            byReason = m.value.waitingByReason;
            lora = m.value.lora;
          }
        }
        expect(waiting).toBeGreaterThanOrEqual(1);
        expect(lora?.waiting).toContain(extra.name);
        if (target.profile === "current") {
          expect(byReason?.deferred).toBeGreaterThanOrEqual(1);
          // Both labels list every adapter with a queued or running request.
          expect(lora?.running).toEqual(lora?.waiting);
        } else {
          // v0.11 has no num_requests_waiting_by_reason, and lists the deferred adapter as waiting only.
          expect(byReason).toBeNull();
          expect(lora?.running).not.toContain(extra.name);
          for (const a of hot) {
            expect(lora?.running).toContain(a.name);
          }
        }
        const base = await postJson(target, "/v1/chat/completions", chatBody(undefined, 1)).then((r) => ({
          ...r,
          at: performance.now() - sentAt,
        }));
        expect(base.status).toBe(200);
        const [extraRes, ...hotRes] = await Promise.all([extraReq, ...hotStreams]);
        const firstHotDone = Math.min(...hotRes.map((r) => r.doneAt));
        expect(extraRes.status).toBe(200);
        expect((extraRes.json as { model: string }).model).toBe(extra.name);
        expect(base.at).toBeLessThan(extraRes.at);
        // It only got in once a hot adapter had no running request left: after the first hot stream ended.
        expect(extraRes.doneAt).toBeGreaterThan(firstHotDone - 25);
        if (target.sim) {
          expect(target.sim.inspect().waiting).toHaveLength(0);
        }
      } finally {
        if (target !== t) {
          await target.close();
        }
      }
    });
  });

  describe("10.12 more than max_cpu_loras loaded: all listed; evicted ones reload slower; deleted files are fatal", () => {
    const allowFatal = !isReal || process.env.VLLM_CONFORMANCE_ALLOW_FATAL === "1";
    it("10.12 evicted adapters stay listed and cost a reload; a deleted one kills the engine", async () => {
      const target = isReal
        ? t
        : await open({ maxLoras: 1, maxCpuLoras: 2, latency: { reloadBaseMs: 150, decodeMsPerStep: 2 } });
      try {
        const big: AdapterFixture = isReal
          ? {
              layers: 32,
              modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            }
          : {};
        const loaded = [];
        for (let i = 0; i < target.maxCpuLoras + 1; i++) {
          loaded.push(await loadNew(`cpu${i}`, big, target));
        }
        const listed = await modelIds(target);
        for (const a of loaded) {
          expect(listed).toContain(a.name);
        }
        const timed = async (model: string) => {
          const t0 = performance.now();
          const r = await postJson(target, "/v1/chat/completions", chatBody(model, 1));
          expect(r.status).toBe(200);
          return performance.now() - t0;
        };
        const newest = loaded.at(-1)?.name ?? "";
        const oldest = loaded[0]?.name ?? "";
        const warm = Math.min(await timed(newest), await timed(newest));
        const evicted = await timed(oldest);
        expect(evicted).toBeGreaterThan(warm + (isReal ? 0 : 100));

        if (!allowFatal) {
          return;
        }
        // The second-loaded adapter is the least recently used now: delete its files and ask for it.
        const victim = loaded[1];
        if (!victim) {
          throw new Error("fixture needs two adapters");
        }
        await rm(victim.path, { recursive: true, force: true });
        let streaming: () => void = () => {};
        const firstEvent = new Promise<void>((r) => {
          streaming = r;
        });
        const bystander = stream(
          target,
          "/v1/completions",
          { prompt: "a long one", max_tokens: 4000, ignore_eos: true },
          {
            onEvent: () => {
              streaming();
              return undefined;
            },
          },
        );
        await firstEvent;
        const doomed = await postJson(target, "/v1/chat/completions", chatBody(victim.name, 1));
        expect(doomed.status).toBe(500);
        const b = await bystander;
        const last = chunks(b.events).at(-1);
        expect(last).toHaveProperty("error");
        expect(b.events.at(-1)?.data).toBe("[DONE]");
        expect(await target.client.health()).toEqual({ kind: "unhealthy", status: 503 });
      } finally {
        if (target !== t) {
          await target.close();
        }
      }
    });
  });

  describe("10.13 a load pauses token emission on every stream of that replica", () => {
    it("10.13 the largest gap between tokens spans the load call", async () => {
      const target = isReal ? t : await open({ latency: { loadBaseMs: 250, decodeMsPerStep: 3 } });
      try {
        const path = await writeAdapter(
          isReal ? { layers: 32, modules: ["q_proj", "v_proj", "gate_proj"] } : {},
        );
        let load: Promise<{ start: number; end: number }> | undefined;
        const t0 = performance.now();
        const res = await stream(
          target,
          "/v1/completions",
          { prompt: "stream on", max_tokens: 4000, ignore_eos: true },
          {
            onEvent: (_e, all) => {
              if (all.length === 20 && !load) {
                const start = performance.now() - t0;
                load = target.client
                  .loadAdapter({ loraName: uniqueName("pause"), absolutePath: path })
                  .then((r) => {
                    expect(r.kind).toBe("ok");
                    return { start, end: performance.now() - t0 };
                  });
              }
              if (load && all.length > 40) {
                return "stop";
              }
              return undefined;
            },
          },
        );
        const window = await (load ?? Promise.reject(new Error("load never started")));
        const ats = res.events.map((e) => e.at);
        let maxGap = 0;
        for (let i = 1; i < ats.length; i++) {
          const prev = ats[i - 1] ?? 0;
          const cur = ats[i] ?? 0;
          if (cur >= window.start && prev <= window.end) {
            maxGap = Math.max(maxGap, cur - prev);
          }
        }
        const loadMs = window.end - window.start;
        expect(maxGap).toBeGreaterThanOrEqual(loadMs * (isReal ? 0.5 : 0.8));
        const sim = target.sim;
        if (sim) {
          await waitFor(() => sim.inspect().abortedRequestIds.length === 1);
        }
      } finally {
        if (target !== t) {
          await target.close();
        }
      }
    });
  });

  describe("10.14 lora_requests_info: identical adapter sets in running and waiting (v0.11: apart); the value is a timestamp", () => {
    it("10.14 the newest series lists the busy adapter (current: in both labels) at the current time", async () => {
      const { name } = await loadNew("info");
      let scrape: ReturnType<typeof t.client.metrics> | undefined;
      let scraped = false;
      await stream(t, "/v1/chat/completions", chatBody(name, 4000), {
        onEvent: (_e, all) => {
          if (all.length === 5) {
            scrape = t.client.metrics().finally(() => {
              scraped = true;
            });
          }
          return scraped ? "stop" : undefined;
        },
      });
      const m = await scrape;
      const seen = m?.kind === "ok" ? m.value.lora : undefined;
      expect(seen).toBeDefined();
      expect(seen?.running).toContain(name);
      if (t.profile === "current") {
        expect(seen?.waiting).toEqual(seen?.running);
      } else {
        // v0.11: a scheduled request counts as running only.
        expect(seen?.waiting).not.toContain(name);
      }
      expect(seen?.maxLora).toBe(t.maxLoras);
      expect(Math.abs((seen?.updatedAt ?? 0) - Date.now() / 1000)).toBeLessThan(30);

      const raw = await (await fetch(`${t.url}/metrics`)).text();
      const series = raw.split("\n").filter((l) => l.startsWith("vllm:lora_requests_info{"));
      expect(series.length).toBeGreaterThan(0);
      const labels = series.map((line) => ({
        running: /running_lora_adapters="([^"]*)"/.exec(line)?.[1],
        waiting: /waiting_lora_adapters="([^"]*)"/.exec(line)?.[1],
      }));
      for (const [i, line] of series.entries()) {
        if (t.profile === "current") {
          expect(labels[i]?.running).toBe(labels[i]?.waiting);
        }
        expect(Number(line.split(" ").at(-1))).toBeGreaterThan(1.6e9);
      }
      if (t.profile === "v0.11") {
        expect(labels.some((l) => l.running !== l.waiting)).toBe(true);
      }
    });
  });

  describe("10.15 health, readiness, api key, content type", () => {
    it("10.15 /health is 200 with an empty body and /ping mirrors it", async () => {
      for (const [method, path] of [
        ["GET", "/health"],
        ["GET", "/ping"],
        ["POST", "/ping"],
      ] as const) {
        const res = await fetch(`${t.url}${path}`, { method });
        expect(res.status).toBe(200);
        expect(await res.text()).toBe("");
      }
      expect(await t.client.health()).toEqual({ kind: "ok" });
    });

    it.skipIf(isReal)("10.15 connections are refused until the engine is ready", async () => {
      const port = await freePort();
      const { createReplicaSim } = await import("../../infra/replica-sim/index.ts");
      const sim = createReplicaSim({ profile: t.profile, startupDelayMs: 300 });
      const starting = sim.start(port);
      const client = vllm.createReplicaClient({ baseUrl: `http://127.0.0.1:${port}`, timeoutMs: 2_000 });
      try {
        await sleep(50); // a probe while the engine starts (300 ms) is the point, not a race to win
        const early = await client.health();
        expect(early.kind).toBe("unreachable");
        const running = await starting;
        expect(await client.health()).toEqual({ kind: "ok" });
        await running.close();
      } finally {
        await client.close();
      }
    });

    it.skipIf(isReal && !process.env.VLLM_CONFORMANCE_API_KEY)(
      "10.15 --api-key guards only /v1/* with 401",
      async () => {
        const keyed = isReal ? t : await open({ apiKey: "conformance-key" });
        try {
          const noAuth = { url: keyed.url, apiKey: undefined };
          for (const path of ["/v1/models"]) {
            const res = await fetch(`${keyed.url}${path}`);
            expect(res.status).toBe(401);
            expect(await res.json()).toEqual({ error: "Unauthorized" });
            const wrong = await fetch(`${keyed.url}${path}`, { headers: { authorization: "Bearer wrong" } });
            expect(wrong.status).toBe(401);
            const right = await fetch(`${keyed.url}${path}`, {
              headers: { authorization: `Bearer ${keyed.apiKey}` },
            });
            expect(right.status).toBe(200);
          }
          const chat = await postJson(noAuth, "/v1/chat/completions", chatBody(undefined, 1));
          expect(chat.status).toBe(401);
          for (const path of ["/health", "/metrics", "/version"]) {
            expect((await fetch(`${keyed.url}${path}`)).status).toBe(200);
          }
          expect((await postJson(noAuth, "/tokenize", { prompt: "hi" })).status).toBe(200);
          const wrongClient = vllm.createReplicaClient({ baseUrl: keyed.url, apiKey: "wrong" });
          try {
            expect(await wrongClient.listModels()).toEqual({ kind: "unauthorized", status: 401 });
            expect(await wrongClient.health()).toEqual({ kind: "ok" });
          } finally {
            await wrongClient.close();
          }
        } finally {
          if (keyed !== t) {
            await keyed.close();
          }
        }
      },
    );

    it("10.15 a JSON POST with another Content-Type → 400, not 415", async () => {
      for (const path of ["/v1/chat/completions", "/v1/load_lora_adapter"]) {
        const res = await fetch(`${t.url}${path}`, {
          method: "POST",
          headers: { ...auth(), "content-type": "text/plain" },
          body: JSON.stringify(chatBody(undefined, 1)),
        });
        expect(res.status).toBe(400);
        const body = (await res.json()) as { error: { type: string; message: string } };
        expect(body.error.type).toBe("Bad Request");
        expect(body.error.message).toContain("application/json");
      }
    });
  });
});

function auth(): Record<string, string> {
  return t.apiKey ? { authorization: `Bearer ${t.apiKey}` } : {};
}

async function modelIds(target: Target = t): Promise<string[]> {
  const res = await target.client.listModels();
  if (res.kind !== "ok") {
    throw new Error(`listModels failed: ${JSON.stringify(res)}`);
  }
  return [...res.value.base, ...res.value.adapters].map((m) => m.id);
}
