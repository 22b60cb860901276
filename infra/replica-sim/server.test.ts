import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { FAST_LATENCY, removeAdapterRoot, writeAdapter } from "../../test/conformance/harness.ts";
import { parseCli } from "./cli.ts";
import { createReplicaSim, type ReplicaSim, type RunningReplicaSim } from "./index.ts";
import type { ReplicaSimOptions } from "./options.ts";

const open: RunningReplicaSim[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()));
});
afterAll(removeAdapterRoot);

async function start(options: ReplicaSimOptions = {}): Promise<{ sim: ReplicaSim; url: string }> {
  const sim = createReplicaSim({
    servedModelNames: ["base"],
    ...options,
    latency: { ...FAST_LATENCY, ...options.latency },
  });
  const running = await sim.start(0);
  open.push(running);
  return { sim, url: running.url };
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json: json as Record<string, unknown> };
}

const until = async (cond: () => boolean, ms = 3_000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) {
      throw new Error("condition not met in time");
    }
    await new Promise((r) => setTimeout(r, 2));
  }
};

describe("replica-sim HTTP", () => {
  it("aborts and records a stream whose client disconnects", async () => {
    const { sim, url } = await start();
    const ac = new AbortController();
    const res = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": "gone-1" },
      body: JSON.stringify({ prompt: "go", max_tokens: 5000, ignore_eos: true, stream: true }),
      signal: ac.signal,
    });
    const reader = res.body?.getReader();
    await reader?.read();
    ac.abort();
    await until(() => sim.inspect().abortedRequestIds.length === 1);
    expect(sim.inspect().abortedRequestIds).toEqual(["cmpl-gone-1"]);
    expect(sim.inspect().running).toEqual([]);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toContain(
      'vllm:request_success_total{engine="0",finished_reason="abort",model_name="base"} 1.0',
    );
  });

  it("aborts and records a non-streaming request whose client disconnects", async () => {
    const { sim, url } = await start();
    const ac = new AbortController();
    const pending = fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": "gone-2" },
      body: JSON.stringify({
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 5000,
        ignore_eos: true,
      }),
      signal: ac.signal,
    }).catch(() => undefined);
    await until(() => sim.inspect().running.length === 1);
    ac.abort();
    await pending;
    await until(() => sim.inspect().abortedRequestIds.length === 1);
    expect(sim.inspect().abortedRequestIds).toEqual(["chatcmpl-gone-2"]);
  });

  it("tokenizes with the real Llama 3 vocabulary and detokenizes back", async () => {
    const { url } = await start();
    const tok = await post(`${url}/tokenize`, { prompt: "Hello world!", return_token_strs: true });
    expect(tok.json).toEqual({
      count: 4,
      max_model_len: 8192,
      tokens: [128000, 9906, 1917, 0],
      token_strs: ["<|begin_of_text|>", "Hello", "Ġworld", "!"],
    });
    const detok = await post(`${url}/detokenize`, { tokens: [128000, 9906, 1917, 0] });
    expect(detok.json).toEqual({ prompt: "<|begin_of_text|>Hello world!" });
  });

  it("counts usage with the tokenizer: prompt tokens match /tokenize, completion tokens match the text", async () => {
    const { url } = await start();
    const messages = [
      { role: "system", content: "Be brief." },
      { role: "user", content: "What is a LoRA adapter?" },
    ];
    const tok = await post(`${url}/tokenize`, { messages });
    const chat = await post(`${url}/v1/chat/completions`, { messages, max_tokens: 12, ignore_eos: true });
    const usage = chat.json.usage as Record<string, unknown>;
    expect(usage).toEqual({
      prompt_tokens: tok.json.count,
      total_tokens: (tok.json.count as number) + 12,
      completion_tokens: 12,
      prompt_tokens_details: null,
    });
    const content = (
      (chat.json.choices as { message: { content: string } }[])[0]?.message.content ?? ""
    ).trim();
    expect(content.split(" ")).toHaveLength(12);
    const again = await post(`${url}/v1/chat/completions`, { messages, max_tokens: 12, ignore_eos: true });
    expect((again.json.choices as { message: { content: string } }[])[0]?.message.content).toBe(
      (chat.json.choices as { message: { content: string } }[])[0]?.message.content,
    );
  });

  it("defaults max_tokens to 16 for completions, as CompletionRequest does", async () => {
    const { url } = await start();
    const res = await post(`${url}/v1/completions`, { prompt: "once upon a time", ignore_eos: true });
    expect(res.json.usage).toMatchObject({ completion_tokens: 16 });
    expect((res.json.choices as { finish_reason: string }[])[0]?.finish_reason).toBe("length");
  });

  it("reports cached prompt tokens when prompt token details are enabled", async () => {
    const { url } = await start({ enablePromptTokensDetails: true });
    const body = { prompt: "shared prefix ".repeat(40), max_tokens: 1 };
    await post(`${url}/v1/completions`, body);
    const second = await post(`${url}/v1/completions`, body);
    const details = (second.json.usage as { prompt_tokens_details: { cached_tokens: number } })
      .prompt_tokens_details;
    expect(details.cached_tokens).toBeGreaterThanOrEqual(64);
  });

  it("refuses max_tokens beyond the context window and prompts that fill it", async () => {
    const { url } = await start({ maxModelLen: 64, kvCacheTokens: 1000 });
    const tooMany = await post(`${url}/v1/completions`, { prompt: "hi", max_tokens: 100 });
    expect(tooMany.status).toBe(400);
    expect(tooMany.json.error).toEqual({
      message:
        "'max_tokens' or 'max_completion_tokens' is too large: 100. This model's maximum context length is 64 tokens and your request has 2 input tokens (100 > 64 - 2).",
      type: "BadRequestError",
      param: "max_tokens",
      code: 400,
    });
    const tooLong = await post(`${url}/v1/completions`, { prompt: "word ".repeat(100) });
    expect(tooLong.status).toBe(400);
    expect((tooLong.json.error as { message: string }).message).toContain(
      "maximum context length is 64 tokens",
    );
  });

  it("answers schema problems as 400 Bad Request, unknown routes 404 and wrong methods 405", async () => {
    const { url } = await start();
    const broken = await post(`${url}/v1/chat/completions`, "{ nope");
    expect(broken.status).toBe(400);
    expect(broken.json.error).toMatchObject({ type: "Bad Request", code: 400 });
    const missing = await post(`${url}/v1/chat/completions`, { model: "base" });
    expect(missing.json.error).toMatchObject({ type: "Bad Request", param: "body.messages" });
    const get = await fetch(`${url}/v1/chat/completions`);
    expect(get.status).toBe(405);
    expect(await get.json()).toEqual({ detail: "Method Not Allowed" });
    const unknown = await fetch(`${url}/v1/nothing-here`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({ detail: "Not Found" });
    expect(await (await fetch(`${url}/version`)).json()).toEqual({ version: "0.21.0" });
  });

  it("speaks the legacy flat error shape and 400 load rejections when asked to", async () => {
    const { url } = await start({ legacyErrors: true });
    const unknown = await post(`${url}/v1/completions`, { model: "nope", prompt: "x" });
    expect(unknown.json).toEqual({
      object: "error",
      message: "The model `nope` does not exist.",
      type: "NotFoundError",
      param: "model",
      code: 404,
    });
    const dir = await writeAdapter({ config: { r: 64 } });
    const load = await post(`${url}/v1/load_lora_adapter`, { lora_name: "big", lora_path: dir });
    expect(load.status).toBe(400);
    expect(load.json).toMatchObject({
      object: "error",
      type: "BadRequestError",
      message: "Call to add_lora method failed: LoRA rank 64 is greater than max_lora_rank 16.",
    });
  });

  it("answers like vLLM v0.11 under profile v0.11: nested 400 rejections, no load_inplace, no by-reason gauge", async () => {
    const { sim, url } = await start({ profile: "v0.11" });
    expect(sim.config).toMatchObject({ profile: "v0.11", version: "0.11.0", loadFailureStatus: 400 });
    expect(await (await fetch(`${url}/version`)).json()).toEqual({ version: "0.11.0" });
    const bad = await post(`${url}/v1/load_lora_adapter`, {
      lora_name: "big",
      lora_path: await writeAdapter({ config: { r: 64 } }),
    });
    expect(bad.status).toBe(400);
    expect(bad.json).toEqual({
      error: {
        message: "Call to add_lora method failed: LoRA rank 64 is greater than max_lora_rank 16.",
        type: "BadRequestError",
        param: null,
        code: 400,
      },
    });
    const path = await writeAdapter();
    expect((await post(`${url}/v1/load_lora_adapter`, { lora_name: "a", lora_path: path })).status).toBe(200);
    const again = await post(`${url}/v1/load_lora_adapter`, {
      lora_name: "a",
      lora_path: path,
      load_inplace: true,
    });
    expect(again.status).toBe(400);
    expect(again.json).toMatchObject({ error: { message: "The lora adapter 'a' has already been loaded." } });
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toContain("vllm:num_requests_waiting{");
    expect(metrics).not.toContain("vllm:num_requests_waiting_by_reason");
    // An explicit version and legacyErrors still win over the profile.
    expect(createReplicaSim({ profile: "v0.11", version: "0.11.2" }).config.version).toBe("0.11.2");
    expect(createReplicaSim({ legacyErrors: true }).config.loadFailureStatus).toBe(400);
    expect(createReplicaSim().config).toMatchObject({ profile: "current", loadFailureStatus: 500 });
    expect(() => createReplicaSim({ profile: "v0.9" as "v0.11" })).toThrow(/profile/);
  });

  it("rejects adapters whose tensors do not fit the base model", async () => {
    const { url } = await start();
    const wrongModule = await writeAdapter();
    const header = JSON.stringify({
      "base_model.model.model.layers.0.self_attn.qkv_weird.lora_A.weight": {
        dtype: "F16",
        shape: [8, 16],
        data_offsets: [0, 256],
      },
    });
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    await writeFile(
      join(wrongModule, "adapter_model.safetensors"),
      Buffer.concat([len, Buffer.from(header), Buffer.alloc(256)]),
    );
    const a = await post(`${url}/v1/load_lora_adapter`, { lora_name: "weird", lora_path: wrongModule });
    expect(a.status).toBe(500);
    expect((a.json.error as { message: string }).message).toBe(
      `Call to add_lora method failed: While loading ${wrongModule}, expected target modules in ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj', 'q_proj', 'k_proj', 'v_proj', 'gate_proj', 'up_proj'] but received ['model.layers.0.self_attn.qkv_weird']. Please verify that the loaded LoRA module is correct`,
    );

    const wideHeader = JSON.stringify({
      "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": {
        dtype: "F16",
        shape: [8, 5120],
        data_offsets: [0, 81920],
      },
    });
    const wide = await writeAdapter();
    const wlen = Buffer.alloc(8);
    wlen.writeBigUInt64LE(BigInt(wideHeader.length));
    await writeFile(
      join(wide, "adapter_model.safetensors"),
      Buffer.concat([wlen, Buffer.from(wideHeader), Buffer.alloc(81920)]),
    );
    const b = await post(`${url}/v1/load_lora_adapter`, { lora_name: "wide", lora_path: wide });
    expect((b.json.error as { message: string }).message).toBe(
      "Call to add_lora method failed: The size of tensor a (4096) must match the size of tensor b (5120) at non-singleton dimension 1",
    );

    const garbage = await writeAdapter();
    await writeFile(join(garbage, "adapter_model.safetensors"), Buffer.from("not a safetensors file at all"));
    const c = await post(`${url}/v1/load_lora_adapter`, { lora_name: "garbage", lora_path: garbage });
    expect((c.json.error as { message: string }).message).toMatch(
      /^Call to add_lora method failed: Error while deserializing header/,
    );
  });

  it("loads --lora-modules at startup and refuses to start when one fails", async () => {
    const dir = await writeAdapter();
    const { url } = await start({ loraModules: [{ name: "static-one", path: dir }] });
    const models = (await (await fetch(`${url}/v1/models`)).json()) as {
      data: { id: string; root: string }[];
    };
    expect(models.data.at(-1)).toMatchObject({ id: "static-one", root: dir });
    const bad = createReplicaSim({ loraModules: [{ name: "broken", path: "/definitely/missing" }] });
    await expect(bad.start(0)).rejects.toThrow(/No adapter found/);
  });

  it("shows running and waiting requests and KV usage in /metrics while streaming", async () => {
    const { sim, url } = await start({ maxNumSeqs: 1 });
    const body = JSON.stringify({ prompt: "x", max_tokens: 3000, ignore_eos: true, stream: true });
    const init = { method: "POST", headers: { "content-type": "application/json" }, body };
    const ac = new AbortController();
    const first = await fetch(`${url}/v1/completions`, { ...init, signal: ac.signal });
    await first.body?.getReader().read();
    const second = fetch(`${url}/v1/completions`, { ...init, signal: ac.signal }).catch(() => undefined);
    await until(() => sim.inspect().waiting.length === 1);
    const m = await (await fetch(`${url}/metrics`)).text();
    expect(m).toContain('vllm:num_requests_running{engine="0",model_name="base"} 1.0');
    expect(m).toContain(
      'vllm:num_requests_waiting_by_reason{engine="0",model_name="base",reason="capacity"} 1.0',
    );
    const kv = Number(/vllm:kv_cache_usage_perc\{[^}]*\} (\S+)/.exec(m)?.[1]);
    expect(kv).toBeGreaterThan(0);
    ac.abort();
    await second;
  });
});

describe("replica-sim CLI", () => {
  it("maps vLLM's flags and VLLM_ALLOW_RUNTIME_LORA_UPDATING onto the simulator options", () => {
    const opts = parseCli(
      [
        "--port",
        "8123",
        "--served-model-name",
        "llama",
        "--max-loras",
        "4",
        "--max-cpu-loras",
        "12",
        "--max-lora-rank",
        "32",
        "--api-key",
        "k",
        "--decode-ms-per-token",
        "30",
        "--lora-modules",
        "a=/srv/a",
      ],
      { VLLM_ALLOW_RUNTIME_LORA_UPDATING: "True" },
    );
    expect(opts).toMatchObject({
      port: 8123,
      servedModelNames: ["llama"],
      maxLoras: 4,
      maxCpuLoras: 12,
      maxLoraRank: 32,
      apiKey: "k",
      allowRuntimeLoraUpdating: true,
      latency: { decodeMsPerStep: 30 },
      loraModules: [{ name: "a", path: "/srv/a" }],
    });
    expect(parseCli([], {}).allowRuntimeLoraUpdating).toBe(false);
    expect(parseCli([], { VLLM_ALLOW_RUNTIME_LORA_UPDATING: "1" }).allowRuntimeLoraUpdating).toBe(true);
    expect(() => parseCli(["--max-loras", "many"], {})).toThrow(/expects a number/);
    expect(parseCli(["--profile", "v0.11"], {}).profile).toBe("v0.11");
    expect(parseCli([], {}).profile).toBeUndefined();
    expect(() => parseCli(["--profile", "0.11"], {})).toThrow(/--profile expects one of v0.11, current/);
    expect(() => createReplicaSim({ maxLoraRank: 24 })).toThrow(/max_lora_rank/);
    expect(() => createReplicaSim({ maxLoras: 4, maxCpuLoras: 2 })).toThrow(/max_cpu_loras/);
  });
});

describe("replica-sim: several choices and prompts per request, as vLLM serves them", () => {
  type Chunk = { choices: { index: number }[]; usage?: { prompt_tokens: number; completion_tokens: number } };
  const chunksOf = (text: string): Chunk[] =>
    text
      .split("\n\n")
      .filter((e) => e.startsWith("data: {"))
      .map((e) => JSON.parse(e.slice(6)) as Chunk);

  it("answers n=3 with three choices and bills the prompt once and every choice's tokens", async () => {
    const { url } = await start();
    const one = await post(`${url}/v1/chat/completions`, {
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 7,
      ignore_eos: true,
    });
    const three = await post(`${url}/v1/chat/completions`, {
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 7,
      ignore_eos: true,
      n: 3,
    });
    expect(three.status).toBe(200);
    const choices = three.json.choices as { index: number }[];
    expect(choices.map((c) => c.index)).toEqual([0, 1, 2]);
    const u1 = one.json.usage as { prompt_tokens: number; completion_tokens: number };
    expect(three.json.usage).toMatchObject({ prompt_tokens: u1.prompt_tokens, completion_tokens: 21 });
  });

  it("streams n=2 with each chunk's continuous usage counting its own choice, and a final sum", async () => {
    const { url } = await start();
    const res = await post(`${url}/v1/chat/completions`, {
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 5,
      ignore_eos: true,
      n: 2,
      stream: true,
      stream_options: { include_usage: true, continuous_usage_stats: true },
    });
    const chunks = chunksOf(res.text);
    const last = chunks.at(-1);
    expect(last?.choices).toEqual([]);
    expect(last?.usage?.completion_tokens).toBe(10);
    const perChoice = new Map<number, number>();
    for (const c of chunks.slice(0, -1)) {
      const index = c.choices[0]?.index ?? -1;
      perChoice.set(index, Math.max(perChoice.get(index) ?? 0, c.usage?.completion_tokens ?? 0));
    }
    expect([...perChoice.entries()].sort()).toEqual([
      [0, 5],
      [1, 5],
    ]);
  });

  it("serves a batch of prompts with n=2 as prompt × n choices, indexed prompt * n + j", async () => {
    const { url } = await start();
    const res = await post(`${url}/v1/completions`, {
      prompt: ["one", "two words"],
      n: 2,
      max_tokens: 4,
      ignore_eos: true,
    });
    expect(res.status).toBe(200);
    expect((res.json.choices as { index: number }[]).map((c) => c.index)).toEqual([0, 1, 2, 3]);
    const single = async (prompt: string) =>
      (
        (await post(`${url}/v1/completions`, { prompt, max_tokens: 1 })).json.usage as {
          prompt_tokens: number;
        }
      ).prompt_tokens;
    expect(res.json.usage).toMatchObject({
      prompt_tokens: (await single("one")) + (await single("two words")),
      completion_tokens: 16,
    });
  });

  it("refuses n=0 with a 400 naming n", async () => {
    const { url } = await start();
    const res = await post(`${url}/v1/completions`, { prompt: "x", n: 0 });
    expect(res.status).toBe(400);
    expect(res.text).toContain("n");
  });
});
