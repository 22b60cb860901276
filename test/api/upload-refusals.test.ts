import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SEEDED_BASE_MODELS } from "../../adapters/validate/base-spec.ts";
import { startHttp } from "../../api/runtime.ts";
import type { Closer } from "../../lib/shutdown.ts";
import { eventually } from "../eventually.ts";
import { configBuffer } from "../fixtures/generate.ts";
import { useHarness } from "../harness.ts";

// An upload refused before its whole body was read must still hand the client its 422: the server
// reads (and drops) the rest instead of resetting the connection under the client's feet.
const h = useHarness();
const run = promisify(execFile);
const BASE = SEEDED_BASE_MODELS.find((b) => b.id === "llama-3.1-8b-instruct-awq") ?? SEEDED_BASE_MODELS[0];
let url = "";
let http: Closer;
let dir = "";
let token = "";

beforeAll(async () => {
  const started = await startHttp(h.deps);
  url = started.url;
  http = started.closer;
  dir = await mkdtemp(join(tmpdir(), "loraplane-refusals-"));
  const tenant = await h.newTenant();
  token = await tenant.token();
  const created = await h.request("POST", "/v1/adapters", {
    token,
    body: { name: "refused", base_model: BASE?.id },
  });
  expect(created.status).toBe(201);
});
afterAll(async () => {
  await http?.close();
  await rm(dir, { recursive: true, force: true });
});

/** The weights part: `size` bytes, starting with a safetensors header length of 2^62 when `hugeHeader`. */
function weights(size: number, hugeHeader: boolean): Buffer {
  const body = randomBytes(size);
  if (hugeHeader) {
    body.writeBigUInt64LE(1n << 62n, 0);
    body[8] = 0x7b;
  }
  return body;
}

interface RefusalCase {
  name: string;
  /** Merged into a valid config; `raw` replaces the whole file instead. */
  config: Record<string, unknown>;
  raw?: string;
  hugeHeader: boolean;
  /** Where the problem's errors point. */
  path: string;
}
const cases: RefusalCase[] = [
  { name: "a DoRA config", config: { use_dora: true }, hugeHeader: false, path: "adapter_config" },
  {
    name: "a rank above the base's maximum",
    config: { r: 128, lora_alpha: 256 },
    hugeHeader: false,
    path: "adapter_config",
  },
  {
    name: "a config with modules_to_save",
    config: { modules_to_save: ["lm_head"] },
    hugeHeader: false,
    path: "adapter_config",
  },
  {
    name: "a config that is not JSON",
    config: {},
    raw: "{ not json",
    hugeHeader: false,
    path: "adapter_config",
  },
  {
    name: "a config trained on another model family",
    config: { base_model_name_or_path: "mistralai/Mistral-7B-Instruct-v0.3" },
    hugeHeader: false,
    path: "adapter_config",
  },
  { name: 'a config with bias "all"', config: { bias: "all" }, hugeHeader: false, path: "adapter_config" },
  { name: "a weights header claiming 2^62 bytes", config: {}, hugeHeader: true, path: "adapter_model" },
];
const configFile = ({ config, raw }: RefusalCase) =>
  raw === undefined ? configBuffer(BASE!, { rank: 8, config }) : Buffer.from(raw);
const sizes = [5 * 1024 * 1024, 50 * 1024 * 1024];

describe.each(sizes)("an upload refused early, with %i bytes of weights behind it", (size) => {
  it.each(cases)("answers $name with its 422 to Node's fetch", async (refusal) => {
    const { hugeHeader, path } = refusal;
    const form = new FormData();
    form.append("adapter_config", new Blob([configFile(refusal)]), "adapter_config.json");
    form.append("adapter_model", new Blob([weights(size, hugeHeader)]), "adapter_model.safetensors");
    const res = await fetch(`${url}/v1/adapters/refused/versions`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: form,
    });
    expect(res.status).toBe(422);
    expect(res.headers.get("content-type")).toContain("application/problem+json");
    const problem = (await res.json()) as { errors: { path: string }[] };
    expect(problem.errors.some((e) => e.path.startsWith(path))).toBe(true);
  });

  it.each(cases)("answers $name with its 422 to curl", async (refusal) => {
    const { hugeHeader, path } = refusal;
    const configPath = join(dir, `config-${size}.json`);
    const modelFile = join(dir, `model-${size}.safetensors`);
    await writeFile(configPath, configFile(refusal));
    await writeFile(modelFile, weights(size, hugeHeader));
    const { stdout } = await run("curl", [
      "-sS",
      "-w",
      "\n%{http_code}",
      "-H",
      `authorization: Bearer ${token}`,
      "-F",
      `adapter_config=@${configPath};type=application/json`,
      "-F",
      `adapter_model=@${modelFile}`,
      `${url}/v1/adapters/refused/versions`,
    ]);
    const lines = stdout.trim().split("\n");
    expect(lines.at(-1)).toBe("422");
    const problem = JSON.parse(lines.slice(0, -1).join("\n")) as { errors: { path: string }[] };
    expect(problem.errors.some((e) => e.path.startsWith(path))).toBe(true);
  });
});

/** An upload whose body arrives a chunk every `everyMs` until `stop` is called (or forever). */
function trickle(everyMs: number) {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const boundary = "----trickle";
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="adapter_config"; filename="adapter_config.json"\r\n\r\n` +
      `${configBuffer(BASE!, { rank: 8 }).toString()}\r\n--${boundary}\r\n` +
      'Content-Disposition: form-data; name="adapter_model"; filename="adapter_model.safetensors"\r\n\r\n',
  );
  // The weights start a 1 MiB header, then come as JSON whitespace: the header is never complete.
  const start = Buffer.alloc(9);
  start.writeBigUInt64LE(1024n * 1024n, 0);
  start[8] = 0x7b;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(Buffer.concat([head, start]));
      timer = setInterval(() => {
        if (!stopped) {
          controller.enqueue(Buffer.alloc(1024, 0x20));
        }
      }, everyMs);
    },
    cancel() {
      clearInterval(timer);
    },
  });
  return {
    body,
    contentType: `multipart/form-data; boundary=${boundary}`,
    stop: () => {
      stopped = true;
      clearInterval(timer);
    },
  };
}

describe("uploads that take their time", () => {
  it("refuses a tenant's upload past its concurrent cap with 429 and Retry-After, and takes one again when a slot frees", async () => {
    const tenant = await h.newTenant();
    const own = await tenant.token();
    expect(
      (await h.request("POST", "/v1/adapters", { token: own, body: { name: "busy", base_model: BASE?.id } }))
        .status,
    ).toBe(201);
    const controllers: AbortController[] = [];
    const cap = h.config.uploads.maxConcurrentPerTenant;
    const slow = Array.from({ length: cap }, () => {
      const upload = trickle(100);
      const controller = new AbortController();
      controllers.push(controller);
      return fetch(`${url}/v1/adapters/busy/versions`, {
        method: "POST",
        headers: { authorization: `Bearer ${own}`, "content-type": upload.contentType },
        body: upload.body,
        duplex: "half",
        signal: controller.signal,
      } as RequestInit).catch(() => null);
    });
    const slots = h.deps.uploads.slots;
    await eventually(() => slots.inUse(tenant.id) === cap);
    const oneMore = await fetch(`${url}/v1/adapters/busy/versions`, {
      method: "POST",
      headers: { authorization: `Bearer ${own}` },
      body: new FormData(),
    });
    expect(oneMore.status).toBe(429);
    expect(oneMore.headers.get("retry-after")).toBe("5");
    expect(await oneMore.json()).toMatchObject({ code: "too_many_uploads" });
    for (const c of controllers) {
      c.abort();
    }
    await Promise.all(slow);
    await eventually(() => slots.inUse(tenant.id) === 0);
    const again = await fetch(`${url}/v1/adapters/busy/versions`, {
      method: "POST",
      headers: { authorization: `Bearer ${own}` },
      body: new FormData(),
    });
    expect(again.status).toBe(422); // taken (and refused for its missing parts), not 429
  });
});
