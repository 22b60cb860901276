import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ApiProcess, startApiProcess } from "../api-process.ts";
import { freePort } from "../conformance/harness.ts";
import { configBuffer } from "../fixtures/generate.ts";
import { BASE, useE2EWorld } from "./world.ts";

// Uploads are tenant input parsed by the API process that also serves everyone's completions. That
// process is measured on its own: a second API copy on the world's database (so it routes to the
// world's replica), its event loop read from its /metrics, not this test process's. It runs favoured
// by the CPU scheduler: this process sends the uploads and hosts the replica on the same two cores,
// and measured without that (schedstat of the API's main thread, 2026-12-02) most of the API's loop
// delay during a 16 MiB upload was time spent waiting for a core (54 of 70 ms in the worst 10 ms
// tick), not time its loop was busy (17 ms). The uploads come from curl, at the lowest priority and
// at 32 MB/s (a fast tenant's link), not from this process: Node's fetch spent a core of it building
// each 16 MiB multipart body, which starved the world's replica and poller (503s), and a local sender
// unbounded in speed measures memory copies on the two cores the API shares, not the API.
const run = promisify(execFile);
const world = useE2EWorld({ replicas: 1 }, { shared: true });
let api: ApiProcess;
let metricsUrl = "";
let dir = "";
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "loraplane-isolation-"));
  await writeFile(join(dir, "adapter_config.json"), configBuffer(BASE, { rank: 8 }));
  const metricsPort = await freePort();
  api = await startApiProcess(world.h.config, { API_METRICS_PORT: String(metricsPort) }, { favoured: true });
  metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
});
afterAll(async () => {
  api?.kill();
  await rm(dir, { recursive: true, force: true });
});

/**
 * The API process's event-loop delay p99 (ms) since the previous call: prom-client's default metric,
 * read from perf_hooks.monitorEventLoopDelay and reset at every scrape.
 */
async function apiLoopP99(): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  const line = text.split("\n").find((l) => l.startsWith("loraplane_nodejs_eventloop_lag_p99_seconds "));
  if (line === undefined) {
    throw new Error("no event-loop p99 in the API's /metrics");
  }
  return Number(line.split(" ")[1]) * 1000;
}

/** A safetensors file whose JSON header holds `tensors` bogus entries, each padded with `pad` bytes. */
function bogusHeader(tensors: number, pad = 0): Buffer {
  const filler = "x".repeat(pad);
  const entries: string[] = [];
  for (let i = 0; i < tensors; i++) {
    entries.push(
      pad > 0 ? `"t${i}${filler}":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}` : `"${i.toString(36)}":0`,
    );
  }
  const json = Buffer.from(`{${entries.join(",")}}`);
  const file = Buffer.alloc(8 + json.length + 2);
  file.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(file, 8);
  return file;
}

/** Sends `model` (written to the test's folder as `file`) with a valid config; status and parsed body. */
async function upload<T>(token: string, name: string, file: string): Promise<{ status: number; body: T }> {
  const { stdout } = await run("nice", [
    ...["-n", "19", "curl", "-sS", "--limit-rate", "32M", "-w", "\n%{http_code}"],
    ...["-H", `authorization: Bearer ${token}`],
    ...["-F", `adapter_config=@${join(dir, "adapter_config.json")};type=application/json`],
    ...["-F", `adapter_model=@${join(dir, file)}`],
    `${api.url}/v1/adapters/${name}/versions`,
  ]);
  const lines = stdout.trimEnd().split("\n");
  return { status: Number(lines.at(-1)), body: JSON.parse(lines.slice(0, -1).join("\n")) as T };
}

/**
 * Runs `work` while completions keep being asked for; returns the API's event-loop p99 over it and
 * the completions' statuses.
 */
async function underLoad<T>(token: string, work: () => Promise<T>) {
  await apiLoopP99(); // starts the window: the scrape resets the histogram
  let running = true;
  const completions: number[] = [];
  const ask = (async () => {
    while (running) {
      const res = await fetch(`${api.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ model: BASE.id, messages: [{ role: "user", content: "hi" }], max_tokens: 2 }),
      });
      await res.text();
      completions.push(res.status);
      await new Promise((r) => setTimeout(r, 20)); // a steady trickle of tenants' traffic, not a flood
    }
  })();
  try {
    const result = await work();
    return { result, completions, p99: await apiLoopP99() };
  } finally {
    running = false;
    await ask;
  }
}

/**
 * Issue 14's bound. With the header parsed on the loop, p99 was 244 ms (16 MiB header) and 375 ms
 * (200,000 tensors), then measured in the test process that hosted the API.
 */
const P99_BOUND_MS = 50;
/** Long enough that the p99 of the 10 ms samples is not decided by one or two of them. */
const WINDOW_MS = 3_000;

/**
 * The same upload again and again for WINDOW_MS (three times at least), all refused alike: the
 * window is spent under uploads, not between them.
 */
async function repeated<T extends { status: number }>(send: () => Promise<T>): Promise<T> {
  const started = Date.now();
  const first = await send();
  for (let i = 1; i < 3 || Date.now() - started < WINDOW_MS; i++) {
    expect((await send()).status).toBe(first.status);
  }
  return first;
}

async function newAdapter(name: string) {
  const tenant = await world.tenant();
  const token = await tenant.token();
  const created = await world.h.request("POST", "/v1/adapters", {
    token,
    body: { name, base_model: BASE.id },
  });
  expect(created.status).toBe(201);
  return token;
}

describe("uploads do not hold the API process", () => {
  it("refuses a 16 MiB header with a 422 while the API's event-loop p99 stays under 50 ms and completions are served", async () => {
    const token = await newAdapter("huge-header");
    const model = bogusHeader(40_000, 370); // just over 16 MiB of JSON header
    expect(model.length).toBeGreaterThan(16 * 1024 * 1024);
    await writeFile(join(dir, "huge-header.safetensors"), model);
    const { result, completions, p99 } = await underLoad(token, () =>
      repeated(() => upload<{ errors: { path: string }[] }>(token, "huge-header", "huge-header.safetensors")),
    );
    process.stdout.write(
      `16 MiB header: the API's event-loop p99 ${p99.toFixed(1)} ms, ${completions.length} completions\n`,
    );
    expect(result.status).toBe(422);
    expect(result.body.errors[0]?.path).toBe("adapter_model:header_length");
    expect(completions.length).toBeGreaterThan(0);
    expect(completions.filter((s) => s !== 200)).toEqual([]);
    expect(p99).toBeLessThan(P99_BOUND_MS);
  });

  it("answers a header of 200,000 bogus tensors with a 422 listing a bounded set of problems, never a 500, p99 under 50 ms", async () => {
    const token = await newAdapter("many-tensors");
    const model = bogusHeader(200_000); // about 1.8 MB: under the header limit, so every entry is checked
    expect(model.length).toBeLessThan(2 * 1024 * 1024);
    await writeFile(join(dir, "many-tensors.safetensors"), model);
    const { result, completions, p99 } = await underLoad(token, () =>
      repeated(() =>
        upload<{ errors: { message: string }[] }>(token, "many-tensors", "many-tensors.safetensors"),
      ),
    );
    process.stdout.write(
      `200,000 tensors: the API's event-loop p99 ${p99.toFixed(1)} ms, ${completions.length} completions\n`,
    );
    expect(result.status).toBe(422);
    expect(result.body.errors.length).toBeLessThanOrEqual(200);
    expect(result.body.errors.at(-1)?.message).toMatch(/and \d+ more/);
    expect(completions.filter((s) => s !== 200)).toEqual([]);
    expect(p99).toBeLessThan(P99_BOUND_MS);
  });
});
