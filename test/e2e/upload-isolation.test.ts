import { monitorEventLoopDelay } from "node:perf_hooks";
import { describe, expect, it } from "vitest";
import { configBuffer } from "../fixtures/generate.ts";
import { BASE, useE2EWorld } from "./world.ts";

// Uploads are tenant input parsed by the API process that also serves everyone's completions.
const world = useE2EWorld({ replicas: 1 }, { shared: true });

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

async function upload(token: string, name: string, model: Buffer): Promise<Response> {
  const form = new FormData();
  form.append("adapter_config", new Blob([configBuffer(BASE, { rank: 8 })]), "adapter_config.json");
  form.append("adapter_model", new Blob([model]), "adapter_model.safetensors");
  return fetch(`${world.url}/v1/adapters/${name}/versions`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
    body: form,
  });
}

/**
 * Runs `work` while completions keep being asked for; returns the event loop's p99 and their statuses.
 * The loop is this process's: the API's and the test client's, which sends the upload too. With the
 * header parsed on the loop, p99 was 244 ms (16 MiB header) and 375 ms (200,000 tensors); in the
 * worker 12-50 ms on a busy 2-core machine. The bound, 100 ms, sits between the two.
 */
async function underLoad<T>(token: string, work: () => Promise<T>) {
  const delay = monitorEventLoopDelay({ resolution: 5 });
  delay.enable();
  let running = true;
  const completions: number[] = [];
  const ask = (async () => {
    while (running) {
      const res = await world.chat(token, {
        model: BASE.id,
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 2,
      });
      await res.text();
      completions.push(res.status);
      await new Promise((r) => setTimeout(r, 20)); // a steady trickle of tenants' traffic, not a flood
    }
  })();
  try {
    const result = await work();
    return { result, completions, p99: delay.percentile(99) / 1e6 };
  } finally {
    running = false;
    await ask;
    delay.disable();
  }
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
  it("refuses a 16 MiB header with a 422 while the event loop's p99 stays under 100 ms and completions are served", async () => {
    const token = await newAdapter("huge-header");
    const model = bogusHeader(40_000, 370); // just over 16 MiB of JSON header
    expect(model.length).toBeGreaterThan(16 * 1024 * 1024);
    const { result, completions, p99 } = await underLoad(token, async () => {
      const res = await upload(token, "huge-header", model);
      return {
        status: res.status,
        body: (await res.json()) as { errors: { path: string; message: string }[] },
      };
    });
    process.stdout.write(
      `16 MiB header: event-loop p99 ${p99.toFixed(1)} ms, ${completions.length} completions\n`,
    );
    expect(result.status).toBe(422);
    expect(result.body.errors[0]?.path).toBe("adapter_model:header_length");
    expect(completions.length).toBeGreaterThan(0);
    expect(completions.every((s) => s === 200)).toBe(true);
    expect(p99).toBeLessThan(100);
  });

  it("answers a header of 200,000 bogus tensors with a 422 listing a bounded set of problems, never a 500", async () => {
    const token = await newAdapter("many-tensors");
    const model = bogusHeader(200_000); // about 1.8 MB: under the header limit, so every entry is checked
    expect(model.length).toBeLessThan(2 * 1024 * 1024);
    const { result, completions, p99 } = await underLoad(token, async () => {
      const res = await upload(token, "many-tensors", model);
      return { status: res.status, body: (await res.json()) as { errors: { message: string }[] } };
    });
    process.stdout.write(
      `200,000 tensors: event-loop p99 ${p99.toFixed(1)} ms, ${completions.length} completions\n`,
    );
    expect(result.status).toBe(422);
    expect(result.body.errors.length).toBeLessThanOrEqual(200);
    expect(result.body.errors.at(-1)?.message).toMatch(/and \d+ more/);
    expect(completions.every((s) => s === 200)).toBe(true);
    expect(p99).toBeLessThan(100);
  });
});
