import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  type AdapterFixture,
  adapterDir,
  removeAdapterRoot,
  type SseEvent,
  uniqueName,
  writeAdapter,
} from "./harness.ts";
import {
  errorOf,
  get,
  isRealSglang,
  openSglangTarget,
  post,
  type SglangTarget,
  sglangStream,
} from "./sglang-harness.ts";

// SGLang's runtime-LoRA protocol, checked against the simulator's SGLang mode, or against a real
// SGLang server when SGLANG_CONFORMANCE_URL names one (see sglang-harness.ts). Every expectation
// names the sgl-project/sglang file (and commit, where the index gave one) it comes from:
//   H = python/sglang/srt/entrypoints/http_server.py @ 0270cffc14bfddbaa85d1c844d584feb47951abf
//   T = python/sglang/srt/managers/tokenizer_control_mixin.py @ 00a2ca2e56d59f0a19186d7a8a58bdda5201023f
//   R = python/sglang/srt/lora/lora_registry.py @ 0270cffc14bfddbaa85d1c844d584feb47951abf
//   M = python/sglang/srt/lora/lora_manager.py (index excerpt 104396548; no commit given)
//   C = python/sglang/srt/entrypoints/openai/serving_chat.py @ 0c078e6f42685e4918bd79a94a025261c7f38942
//   B = python/sglang/srt/entrypoints/openai/serving_base.py @ c5695a4be1c4f84791eeaceeb6e4a775f8e7d0cc
//       (and a newer, unpinned copy, excerpt 53984462520, for `_parse_model_parameter`)
//   K = python/sglang/srt/managers/tokenizer_manager.py `_resolve_lora_path` (excerpts 325668100, 55060575486)
//   A = python/sglang/srt/utils/auth.py @ 0ce3659c2b55b6fb88c7b8ddf7401c61f8762c90
//   X = python/sglang/srt/metrics/collector.py @ 00ae9c1590d2d0bb6c0bfff39e312c34ae3dd538

let t: SglangTarget;
/** Names loaded by the running test: unloaded afterwards so every test starts from an empty registry. */
const loadedHere = new Set<string>();

beforeAll(async () => {
  t = await openSglangTarget();
});

afterEach(async () => {
  for (const name of loadedHere) {
    await post(t, "/unload_lora_adapter", { lora_name: name });
  }
  loadedHere.clear();
});

afterAll(async () => {
  await t?.close();
  await removeAdapterRoot();
});

interface LoraUpdate {
  success: boolean;
  error_message: string | null;
  loaded_adapters: Record<string, string> | null;
}

async function load(
  name: string,
  path: string,
  target: SglangTarget = t,
  extra: Record<string, unknown> = {},
) {
  const res = await post(target, "/load_lora_adapter", { lora_name: name, lora_path: path, ...extra });
  if (target === t) {
    loadedHere.add(name);
  }
  return { ...res, body: res.json as LoraUpdate };
}

async function loadNew(prefix: string, fixture: AdapterFixture = {}) {
  const name = uniqueName(prefix);
  const path = await writeAdapter(fixture);
  const res = await load(name, path);
  expect(res.status, res.text).toBe(200);
  return { name, path };
}

interface ModelCard {
  id: string;
  object: string;
  owned_by: string;
  root: string | null;
  parent: string | null;
  max_model_len: number | null;
}

async function models(target: SglangTarget = t): Promise<ModelCard[]> {
  const res = await get(target, "/v1/models");
  expect(res.status).toBe(200);
  return (res.json as { data: ModelCard[] }).data;
}

const chat = (model: string, maxTokens: number, extra: Record<string, unknown> = {}) => ({
  model,
  messages: [{ role: "user", content: "Say something." }],
  max_tokens: maxTokens,
  ignore_eos: true,
  ...extra,
});

function chunks(events: readonly SseEvent[]): Record<string, unknown>[] {
  return events.flatMap((e) => (e.data === "[DONE]" ? [] : [e.data]));
}

type Choice = { delta?: Record<string, unknown>; finish_reason?: unknown; text?: string };
const choicesOf = (c: Record<string, unknown>) => (c.choices as Choice[] | undefined) ?? [];

describe("load_lora_adapter (H, T, M)", () => {
  it("loads: 200 with {success: true, error_message: '', loaded_adapters: {name: path}}", async () => {
    const name = uniqueName("ok");
    const path = await writeAdapter();
    const res = await load(name, path);
    // H `load_lora_adapter`: `status_code = HTTPStatus.OK if result.success else HTTPStatus.BAD_REQUEST`.
    expect(res.status).toBe(200);
    expect(res.body.success).toBe(true);
    // M `create_lora_update_result(self, success, error_message: str = "")`.
    expect(res.body.error_message).toBe("");
    // M: `loaded_adapters={lora_ref.lora_name: lora_ref.lora_path …}`.
    expect(res.body.loaded_adapters?.[name]).toBe(path);
  });

  it("loading a loaded name again: 400, 'Failed to load LoRA adapter <n> because it is already loaded'", async () => {
    const { name, path } = await loadNew("twice");
    const again = await load(name, path);
    // M `validate_new_adapter`; T returns the backend result, H maps success=False to 400.
    expect(again.status).toBe(400);
    expect(again.body.success).toBe(false);
    expect(again.body.error_message).toBe(`Failed to load LoRA adapter ${name} because it is already loaded`);
    expect(again.body.loaded_adapters?.[name]).toBe(path);
    expect((await models()).filter((m) => m.id === name)).toHaveLength(1);
  });

  it("a path that does not exist: 400 with the loader's error, nothing registered", async () => {
    const name = uniqueName("missing");
    const path = join(await adapterDir(), "no-such-adapter");
    const res = await load(name, path);
    // M `load_lora_adapter`: `except Exception as e: … error_message=str(e)` around `LoRAConfig(lora_path)`.
    expect(res.status).toBe(400);
    expect(res.body.success).toBe(false);
    expect(res.body.error_message).toBeTruthy();
    expect((await models()).map((m) => m.id)).not.toContain(name);
  });

  it("a directory without adapter_config.json: 400 naming the file", async () => {
    const name = uniqueName("noconfig");
    const dir = join(await adapterDir(), uniqueName("empty"));
    await mkdir(dir, { recursive: true });
    const res = await load(name, dir);
    // lora_config.py @ 84877609: `open(os.path.join(weights_dir, "adapter_config.json"))`.
    expect(res.status).toBe(400);
    expect(res.body.success).toBe(false);
    expect(res.body.error_message).toContain("adapter_config.json");
  });

  it("a rank above --max-lora-rank: 400, 'incompatible with the current LoRA memory pool configuration'", async () => {
    const name = uniqueName("rank");
    const rank = t.maxLoraRank * 2;
    const path = await writeAdapter({ config: { r: rank } });
    const res = await load(name, path);
    // M `validate_new_adapter`: `memory_pool.can_support(lora_config)` fails.
    expect(res.status).toBe(400);
    expect(res.body.success).toBe(false);
    expect(res.body.error_message).toBe(
      `LoRA adapter ${name} with rank ${rank} is incompatible with the current LoRA memory pool configuration. Please ensure that the LoRA adapter's rank is within the configured \`--max-lora-rank\` and that the target modules are included in \`--lora-target-modules\`.`,
    );
    expect((await models()).map((m) => m.id)).not.toContain(name);
  });

  it("a body without lora_path: 400", async () => {
    const res = await post(t, "/load_lora_adapter", { lora_name: uniqueName("nopath") });
    expect(res.status).toBe(400);
    // io_struct.py (excerpts 54487711784, 63903224): `lora_path: str` is required, so H's
    // RequestValidationError handler answers ErrorResponse(type="Bad Request", code=400). Older
    // copies (excerpt 70821600088) default it to "", and the load then fails as LoRAUpdateOutput.
    const body = res.json as Record<string, unknown>;
    if (body.success === undefined) {
      expect(errorOf(body)).toMatchObject({ type: "Bad Request", code: 400 });
    } else {
      expect(body.success).toBe(false);
    }
    if (t.kind === "sim") {
      expect(errorOf(body)).toMatchObject({ type: "Bad Request", code: 400 });
    }
  });

  it.skipIf(isRealSglang && !process.env.SGLANG_CONFORMANCE_MAX_LOADED_LORAS)(
    "past --max-loaded-loras the load succeeds and the least recently used adapter is unloaded",
    async () => {
      const max = t.maxLoadedLoras ?? 0;
      const first = await loadNew("lru-0");
      const rest: { name: string; path: string }[] = [];
      for (let i = 1; i < max; i++) {
        rest.push(await loadNew(`lru-${i}`));
      }
      // Using the first adapter makes it the most recently used (R `acquire`: move_to_end).
      const used = await post(t, "/v1/chat/completions", chat(`${t.baseName}:${first.name}`, 2));
      expect(used.status, used.text).toBe(200);
      const extra = await load(uniqueName("lru-extra"), await writeAdapter());
      // T `load_lora_adapter`: `while num_registered_loras > max_loaded_loras:` unload
      // `lru_lora_name(exclude_pinned=True)` and `del result.loaded_adapters[lru_lora_name]`.
      expect(extra.status, extra.text).toBe(200);
      expect(extra.body.success).toBe(true);
      const evicted = rest[0]?.name ?? first.name;
      expect(Object.keys(extra.body.loaded_adapters ?? {})).not.toContain(evicted);
      expect(Object.keys(extra.body.loaded_adapters ?? {})).toContain(first.name);
      const ids = (await models()).map((m) => m.id);
      expect(ids).not.toContain(evicted);
      expect(ids).toContain(first.name);
    },
  );
});

describe("unload_lora_adapter (H, T, R)", () => {
  it("unloads: 200 {success: true}, gone from loaded_adapters and /v1/models", async () => {
    const { name } = await loadNew("unload");
    const res = await post(t, "/unload_lora_adapter", { lora_name: name });
    expect(res.status).toBe(200);
    const body = res.json as LoraUpdate;
    expect(body.success).toBe(true);
    expect(body.error_message).toBe("");
    expect(Object.keys(body.loaded_adapters ?? {})).not.toContain(name);
    expect((await models()).map((m) => m.id)).not.toContain(name);
    loadedHere.delete(name);
  });

  it("an unknown name: 400, 'LoRA with name <n> does not exist. Loaded LoRAs: …'", async () => {
    const name = uniqueName("ghost");
    const res = await post(t, "/unload_lora_adapter", { lora_name: name });
    // R `unregister`: `raise ValueError(f"LoRA with name {lora_name} does not exist. Loaded LoRAs: {self._registry.keys()}")`.
    expect(res.status).toBe(400);
    const body = res.json as LoraUpdate;
    expect(body.success).toBe(false);
    expect(body.error_message).toMatch(
      new RegExp(`^LoRA with name ${name} does not exist\\. Loaded LoRAs: `),
    );
  });

  it("while a stream uses the adapter, unload answers only after the stream has ended", async () => {
    const { name } = await loadNew("drain");
    let unloadAt = 0;
    let unload: Promise<unknown> | null = null;
    let modelsDuringDrain: string[] | null = null;
    const result = await sglangStream(
      t,
      "/v1/chat/completions",
      chat(`${t.baseName}:${name}`, 120),
      (e, all) => {
        if (unload === null && e.data !== "[DONE]" && all.length >= 2) {
          // T `_unload_lora_adapter_locked`: unregister first (new requests stop finding it), then
          // `await self.lora_registry.wait_for_unload(lora_id)` (R: the usage counter reaches zero).
          unload = post(t, "/unload_lora_adapter", { lora_name: name }).then(async (r) => {
            unloadAt = r.at;
            return r;
          });
          void new Promise((r) => setTimeout(r, 20))
            .then(() => models())
            .then((m) => {
              modelsDuringDrain = m.map((c) => c.id);
            });
        }
        return undefined;
      },
    );
    const streamEnd = performance.now();
    expect(result.status).toBe(200);
    expect(result.events.at(-1)?.data).toBe("[DONE]");
    const res = (await unload) as unknown as { status: number; json: LoraUpdate } | null;
    expect(res?.status).toBe(200);
    expect(res?.json.success).toBe(true);
    expect(unloadAt).toBeGreaterThanOrEqual(streamEnd - 5);
    expect(modelsDuringDrain).not.toContain(name);
    loadedHere.delete(name);
  });

  it("a request naming an unloaded adapter loads it again (K: lora_ref_cache)", async () => {
    const { name, path } = await loadNew("reload");
    expect((await post(t, "/unload_lora_adapter", { lora_name: name })).status).toBe(200);
    // K `_resolve_lora_path`: an unregistered name found in `lora_ref_cache` is loaded again
    // ("Reloading evicted adapter") before `acquire`.
    const res = await post(t, "/v1/chat/completions", chat(`${t.baseName}:${name}`, 2));
    expect(res.status, res.text).toBe(200);
    const card = (await models()).find((m) => m.id === name);
    expect(card?.root).toBe(path);
  });
});

describe("/v1/models (H `available_models`)", () => {
  it("lists the served name, then each loaded adapter with root = lora_path and parent = the served name", async () => {
    const before = await models();
    // H: `ModelCard(id=served_model_name, root=served_model_name, max_model_len=context_len)`.
    expect(before[0]).toMatchObject({ id: t.baseName, object: "model", root: t.baseName, parent: null });
    expect(typeof before[0]?.max_model_len).toBe("number");
    const { name, path } = await loadNew("listed");
    const after = await models();
    // H: `ModelCard(id=lora_ref.lora_name, root=lora_ref.lora_path, parent=served_model_names[0], max_model_len=None)`.
    expect(after.find((m) => m.id === name)).toMatchObject({
      id: name,
      object: "model",
      root: path,
      parent: t.baseName,
      max_model_len: null,
    });
    expect(after.length).toBe(before.length + 1);
    await post(t, "/unload_lora_adapter", { lora_name: name });
    loadedHere.delete(name);
    expect((await models()).map((m) => m.id)).not.toContain(name);
  });

  it("/v1/models/<adapter> is 404 model_not_found: only the served name is retrievable", async () => {
    const { name } = await loadNew("retrieve");
    const res = await get(t, `/v1/models/${name}`);
    // H `retrieve_model`: `if model not in served_model_names: … status_code=404 … "code": "model_not_found"`.
    expect(res.status).toBe(404);
    expect((res.json as { error: { code: string } }).error.code).toBe("model_not_found");
    expect((await get(t, `/v1/models/${t.baseName}`)).status).toBe(200);
  });
});

describe("inference with an adapter (B, C, K)", () => {
  it("model '<base>:<adapter>' serves the adapter and echoes the model string", async () => {
    const { name } = await loadNew("infer");
    const model = `${t.baseName}:${name}`;
    const res = await post(t, "/v1/chat/completions", chat(model, 4));
    expect(res.status, res.text).toBe(200);
    const body = res.json as {
      object: string;
      model: string;
      choices: { message: { role: string }; finish_reason: string }[];
      usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
    };
    expect(body.object).toBe("chat.completion");
    // C `_build_chat_response`: `model=request.model`.
    expect(body.model).toBe(model);
    expect(body.choices[0]?.message.role).toBe("assistant");
    expect(body.choices[0]?.finish_reason).toBe("length");
    expect(body.usage.completion_tokens).toBe(4);
    expect(body.usage.total_tokens).toBe(body.usage.prompt_tokens + 4);
  });

  it("the lora_path field names the adapter; an adapter in model wins over it (B `_resolve_lora_path`)", async () => {
    const { name } = await loadNew("field");
    const viaField = await post(t, "/v1/chat/completions", chat(t.baseName, 2, { lora_path: name }));
    expect(viaField.status, viaField.text).toBe(200);
    // "Model parameter adapter takes precedence": an unknown lora_path is not consulted.
    const both = await post(
      t,
      "/v1/chat/completions",
      chat(`${t.baseName}:${name}`, 2, { lora_path: uniqueName("never") }),
    );
    expect(both.status, both.text).toBe(200);
    const completion = await post(t, "/v1/completions", {
      model: `${t.baseName}:${name}`,
      prompt: "Once upon a time",
      max_tokens: 3,
      ignore_eos: true,
    });
    expect(completion.status, completion.text).toBe(200);
    expect((completion.json as { object: string }).object).toBe("text_completion");
  });

  it("an adapter never loaded: 400 BadRequestError without streaming", async () => {
    const ghost = uniqueName("ghost");
    const res = await post(t, "/v1/chat/completions", chat(`${t.baseName}:${ghost}`, 2));
    // K: `ValueError(f"Got LoRA adapter that has never been loaded: {lora_path}\n…")`; C
    // `_handle_non_streaming_request`: `except ValueError as e: return self.create_error_response(str(e))`
    // (B: type "BadRequestError", code 400).
    expect(res.status).toBe(400);
    const err = errorOf(res.json);
    expect(err?.code).toBe(400);
    expect(err?.message).toMatch(new RegExp(`(never been loaded|not loaded): ${ghost}`));
  });

  it("an adapter never loaded, streaming: a 200 stream holding one error event, then [DONE]", async () => {
    const ghost = uniqueName("ghost");
    const res = await sglangStream(t, "/v1/chat/completions", chat(`${t.baseName}:${ghost}`, 2));
    // C `_generate_chat_stream`: `except ValueError as e: error = self.create_streaming_error_response(str(e));
    // yield f"data: {error}\n\n"` then `yield "data: [DONE]\n\n"`.
    expect(res.status).toBe(200);
    expect(res.events.at(-1)?.data).toBe("[DONE]");
    const first = res.events[0]?.data as { error?: { message: string; code: number } };
    expect(first.error?.code).toBe(400);
    expect(first.error?.message).toContain(ghost);
  });
});

describe("SSE streams (C)", () => {
  it("include_usage: role chunk first, a finish chunk, a usage chunk with choices [], then [DONE]", async () => {
    const { name } = await loadNew("sse");
    const res = await sglangStream(
      t,
      "/v1/chat/completions",
      chat(`${t.baseName}:${name}`, 5, { stream_options: { include_usage: true } }),
    );
    expect(res.status).toBe(200);
    expect(res.raw.endsWith("data: [DONE]\n\n")).toBe(true);
    const cs = chunks(res.events);
    // C: "First chunk with role": `DeltaMessage(role="assistant", content="")`.
    expect(choicesOf(cs[0] ?? {})[0]?.delta).toMatchObject({ role: "assistant", content: "" });
    expect(cs[0]?.object).toBe("chat.completion.chunk");
    // C: "Send finish_reason chunks for each index that completed".
    const finish = cs.filter((c) => choicesOf(c).some((ch) => ch.finish_reason));
    expect(finish).toHaveLength(1);
    expect(choicesOf(finish[0] ?? {})[0]?.finish_reason).toBe("length");
    // C: "Additional usage chunk": `choices=[]`, `usage=usage`, the last before [DONE].
    const last = cs.at(-1) ?? {};
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ completion_tokens: 5 });
    const text = cs.map((c) => choicesOf(c)[0]?.delta?.content ?? "").join("");
    expect(text.length).toBeGreaterThan(0);
  });

  it("continuous_usage_stats alone puts usage on content chunks and sends no usage chunk", async () => {
    const res = await sglangStream(
      t,
      "/v1/chat/completions",
      chat(t.baseName, 4, { stream_options: { continuous_usage_stats: true } }),
    );
    expect(res.status).toBe(200);
    const cs = chunks(res.events);
    // C: `if request.stream_options and request.stream_options.continuous_usage_stats: chunk.usage = …`
    // on content chunks (no include_usage needed, unlike vLLM); the usage chunk needs include_usage.
    const content = cs.filter(
      (c) => typeof choicesOf(c)[0]?.delta?.content === "string" && choicesOf(c)[0]?.delta?.content !== "",
    );
    expect(content.length).toBeGreaterThan(0);
    const usages = content.map((c) => c.usage as { prompt_tokens: number; completion_tokens: number });
    expect(usages.every((u) => u && u.prompt_tokens > 0)).toBe(true);
    const completions = usages.map((u) => u.completion_tokens);
    expect([...completions].sort((a, b) => a - b)).toEqual(completions);
    expect(cs.some((c) => Array.isArray(c.choices) && c.choices.length === 0)).toBe(false);
  });

  it("completions stream with include_usage ends with a usage chunk and [DONE]", async () => {
    const res = await sglangStream(t, "/v1/completions", {
      model: t.baseName,
      prompt: "Once upon a time",
      max_tokens: 3,
      ignore_eos: true,
      stream_options: { include_usage: true },
    });
    expect(res.status).toBe(200);
    expect(res.events.at(-1)?.data).toBe("[DONE]");
    const cs = chunks(res.events);
    expect(cs[0]?.object).toBe("text_completion");
    expect(cs.at(-1)?.usage).toMatchObject({ completion_tokens: 3 });
  });
});

describe("/metrics (X; A: never behind a key)", () => {
  it("has sglang:num_running_reqs and sglang:num_queue_reqs and no per-adapter series", async () => {
    const { name } = await loadNew("metrics");
    expect((await post(t, "/v1/chat/completions", chat(`${t.baseName}:${name}`, 2))).status).toBe(200);
    const res = await get(t, "/metrics", null);
    expect(res.status).toBe(200);
    // X: Gauge(name="sglang:num_running_reqs", …), Gauge(name="sglang:num_queue_reqs", …).
    expect(res.text).toMatch(/^sglang:num_running_reqs(\{[^}]*\})? /m);
    expect(res.text).toMatch(/^sglang:num_queue_reqs(\{[^}]*\})? /m);
    expect(res.text).not.toContain(name);
    expect(res.text).not.toContain("vllm:");
  });
});

describe("/server_info (H `server_info`)", () => {
  it("reports the LoRA flags and the version", async () => {
    const res = await get(t, "/server_info");
    expect(res.status).toBe(200);
    const info = res.json as Record<string, unknown>;
    // H: `**server_args…, "version": __version__, "frontend": "python"`.
    expect(typeof info.version).toBe("string");
    expect(info.max_loras_per_batch).toBe(t.maxLorasPerBatch);
    expect(info.max_loaded_loras ?? null).toBe(t.maxLoadedLoras);
  });
});

describe("keys (A `decide_request_auth`, H auth levels)", () => {
  const realKey = process.env.SGLANG_CONFORMANCE_API_KEY;
  let k: SglangTarget;
  beforeAll(async () => {
    k = isRealSglang ? t : await openSglangTarget({ apiKey: "conformance-key" });
  });
  afterAll(async () => {
    if (k !== t) {
      await k?.close();
    }
  });

  it.skipIf(isRealSglang && !realKey)(
    "/v1 routes need the key (Bearer or x-api-key); /health and /metrics do not",
    async () => {
      const key = k.apiKey ?? "";
      const none = await get(k, "/v1/models", null);
      // A: `{"error": "Unauthorized"}` with 401.
      expect(none.status).toBe(401);
      expect(none.json).toEqual({ error: "Unauthorized" });
      expect((await get(k, "/v1/models", "wrong")).status).toBe(401);
      expect((await get(k, "/v1/models", key)).status).toBe(200);
      const x = await fetch(`${k.url}/v1/models`, { headers: { "x-api-key": key } });
      expect(x.status).toBe(200);
      expect((await post(k, "/v1/chat/completions", chat(k.baseName, 1), null)).status).toBe(401);
      // A: "Health/readiness/metrics endpoints are always allowed".
      expect((await get(k, "/health", null)).status).toBe(200);
      expect((await get(k, "/metrics", null)).status).toBe(200);
    },
  );

  it.skipIf(isRealSglang && (!realKey || Boolean(process.env.SGLANG_CONFORMANCE_ADMIN_API_KEY)))(
    "load and unload (ADMIN_OPTIONAL) take the API key when no admin key is set",
    async () => {
      const name = uniqueName("keyed");
      const path = await writeAdapter();
      expect((await post(k, "/load_lora_adapter", { lora_name: name, lora_path: path }, null)).status).toBe(
        401,
      );
      expect(
        (await post(k, "/load_lora_adapter", { lora_name: name, lora_path: path }, k.apiKey)).status,
      ).toBe(200);
      expect((await post(k, "/unload_lora_adapter", { lora_name: name }, null)).status).toBe(401);
      expect((await post(k, "/unload_lora_adapter", { lora_name: name }, k.apiKey)).status).toBe(200);
    },
  );

  it.skipIf(isRealSglang && !process.env.SGLANG_CONFORMANCE_ADMIN_API_KEY)(
    "with --admin-api-key, load takes only the admin key, and the admin key does not open /v1",
    async () => {
      const a = isRealSglang ? t : await openSglangTarget({ apiKey: "normal-key", adminApiKey: "admin-key" });
      try {
        const name = uniqueName("admin");
        const path = await writeAdapter();
        // A: "both: require admin_api_key (api_key is NOT accepted)".
        expect(
          (await post(a, "/load_lora_adapter", { lora_name: name, lora_path: path }, a.apiKey)).status,
        ).toBe(401);
        expect(
          (await post(a, "/load_lora_adapter", { lora_name: name, lora_path: path }, a.adminApiKey)).status,
        ).toBe(200);
        if (a.apiKey) {
          // A: normal endpoints "require api_key (even if admin_api_key is also configured)".
          expect((await get(a, "/v1/models", a.adminApiKey)).status).toBe(401);
        }
        expect((await post(a, "/unload_lora_adapter", { lora_name: name }, a.adminApiKey)).status).toBe(200);
      } finally {
        if (a !== t) {
          await a.close();
        }
      }
    },
  );
});
