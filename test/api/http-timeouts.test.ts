import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SEEDED_BASE_MODELS } from "../../adapters/validate/base-spec.ts";
import { startHttp } from "../../api/runtime.ts";
import type { Closer } from "../../lib/shutdown.ts";
import { buildAdapter } from "../fixtures/generate.ts";
import { adapterForm, useHarness } from "../harness.ts";

// A request whose body stops arriving for a second is cut; one that keeps sending may take longer.
const h = useHarness({ HTTP_IDLE_TIMEOUT_MS: "1000" });
const BASE = SEEDED_BASE_MODELS.find((b) => b.id === "llama-3.1-8b-instruct-awq") ?? SEEDED_BASE_MODELS[0];
let url = "";
let http: Closer;
beforeAll(async () => {
  ({ url, closer: http } = await startHttp(h.deps));
});
afterAll(async () => {
  await http?.close();
});

describe("request timeouts", () => {
  it("cuts a connection whose request body stops arriving for HTTP_IDLE_TIMEOUT_MS", async () => {
    const { port, hostname } = new URL(url);
    const token = await (await h.newTenant()).token();
    const socket = connect({ host: hostname, port: Number(port) });
    await new Promise((r) => socket.once("connect", r));
    // A tenant's completion whose body stops after one byte: the handler waits for the rest.
    socket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    );
    socket.resume(); // read whatever the server says, so its closing is seen
    const started = Date.now();
    const closedAfter = await new Promise<number>((resolve) => {
      socket.once("close", () => resolve(Date.now() - started));
      setTimeout(() => resolve(Number.POSITIVE_INFINITY), 5_000);
    });
    socket.destroy();
    expect(closedAfter).toBeLessThan(3_000);
  });

  it("lets an upload that keeps sending run past HTTP_IDLE_TIMEOUT_MS", async () => {
    const tenant = await h.newTenant();
    const token = await tenant.token();
    expect(
      (await h.request("POST", "/v1/adapters", { token, body: { name: "slow", base_model: BASE?.id } }))
        .status,
    ).toBe(201);
    const form = adapterForm(buildAdapter(BASE!, { rank: 8 }));
    const encoded = new Response(form);
    const contentType = encoded.headers.get("content-type") ?? "";
    const whole = Buffer.from(await encoded.arrayBuffer());
    const pieces = 10;
    const size = Math.ceil(whole.length / pieces);
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        for (let i = 0; i < pieces; i++) {
          controller.enqueue(whole.subarray(i * size, (i + 1) * size));
          await new Promise((r) => setTimeout(r, 300)); // 3 s in all, never a second of silence
        }
        controller.close();
      },
    });
    const started = Date.now();
    const res = await fetch(`${url}/v1/adapters/slow/versions`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": contentType },
      body,
      duplex: "half",
    } as RequestInit);
    expect(res.status).toBe(201);
    expect(Date.now() - started).toBeGreaterThan(2_500);
  });
});
