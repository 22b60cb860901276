import { afterAll, describe, expect, it } from "vitest";
import { type ApiProcess, startApiProcess } from "../api-process.ts";
import { useHarness } from "../harness.ts";

const h = useHarness();
const processes: ApiProcess[] = [];
afterAll(() => {
  for (const p of processes) {
    p.kill();
  }
});

const chat = (url: string, token: string, model: string) =>
  fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }] }),
  });

describe("model names a tenant controls", () => {
  it("answers a model name past 256 bytes with an OpenAI-shaped 400, and one of 256 as unknown", async () => {
    const token = await (await h.newTenant()).token();
    const long = await h.request<{ error: { param: string; type: string } }>("POST", "/v1/chat/completions", {
      token,
      body: { model: "m".repeat(257), messages: [] },
    });
    expect(long.status).toBe(400);
    expect(long.body.error).toMatchObject({ param: "model", type: "invalid_request_error" });
    const atLimit = await h.request<{ error: { code: string } }>("POST", "/v1/chat/completions", {
      token,
      body: { model: "m".repeat(256), messages: [] },
    });
    expect(atLimit.status).toBe(404);
    expect(atLimit.body.error.code).toBe("model_not_found");
  });

  it("answers 500 distinct 1 MB model names with 4xx while the API's memory grows less than 50 MB", async () => {
    const api = await startApiProcess(h.config);
    processes.push(api);
    const token = await (await h.newTenant()).token();
    const send = async (from: number, count: number) => {
      // Two at a time: what is measured is what the names leave behind, not how many bodies are in flight.
      for (let i = from; i < from + count; i += 2) {
        const statuses = await Promise.all(
          [0, 1].map(async (k) => {
            const res = await chat(api.url, token, `${i + k}-${"x".repeat(1024 * 1024)}`);
            await res.text();
            return res.status;
          }),
        );
        expect(statuses.every((s) => s >= 400 && s < 500)).toBe(true);
      }
    };
    // Warm up with 500 requests of the same kind: the heap and the allocator grow to what such requests in
    // flight need; what is measured is what 500 more, with names the process has not seen, leave behind.
    await send(0, 500);
    // Resident memory settles as the collector runs on an idle process: the lowest of a few readings.
    const settled = async () => {
      let lowest = Number.POSITIVE_INFINITY;
      for (let i = 0; i < 12; i++) {
        await new Promise((r) => setTimeout(r, 250));
        lowest = Math.min(lowest, api.rss());
      }
      return lowest;
    };
    const before = await settled();
    await send(500, 500);
    const grown = (await settled()) - before;
    process.stdout.write(`API RSS grew ${(grown / 1e6).toFixed(1)} MB over 500 distinct 1 MB model names\n`);
    expect(grown).toBeLessThan(50 * 1024 * 1024);
    // 1,000 MiB of bodies: about 20 s on a quiet 2-core machine, twice that when it is shared.
  }, 120_000);
});
