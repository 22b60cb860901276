import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { SEEDED_BASE_MODELS } from "../../adapters/validate/base-spec.ts";
import { S3RVER_CREDENTIALS } from "../../infra/dev/s3-server.ts";
import { eventually } from "../eventually.ts";
import { buildAdapter } from "../fixtures/generate.ts";
import { adapterForm } from "../harness.ts";
import { databaseUrl } from "../setup/global.ts";

/**
 * The admin console in Debian's chromium (STACK.md: playwright-core, never a downloaded browser)
 * against `npm start`'s system (infra/dev/start.ts: API, scheduler, metering, two simulated
 * replicas with agents) carrying traffic. Screenshots go to test-results/ (git-ignored).
 */
const ROOT = resolve(import.meta.dirname, "../..");
const SHOTS = join(ROOT, "test-results", "console");
const BASE = SEEDED_BASE_MODELS.find((b) => b.id === "llama-3.1-8b-instruct-awq") ?? expect.unreachable();

function chromiumPath(): string | null {
  try {
    return execFileSync("sh", ["-c", "command -v chromium"]).toString().trim() || null;
  } catch {
    return null;
  }
}

const executablePath = chromiumPath();

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

interface System {
  child: ChildProcess;
  url: string;
  admin: string;
  tenant: string;
}

async function startSystem(): Promise<System> {
  const runId = `${inject("runId")}_console`;
  const [port, meteringPort] = [await freePort(), await freePort()];
  const child = spawn(join(ROOT, "node_modules/.bin/node"), ["infra/dev/start.ts"], {
    cwd: ROOT,
    env: {
      ...process.env,
      PORT: String(port),
      METERING_METRICS_PORT: String(meteringPort),
      DATABASE_URL: databaseUrl(inject("pgBaseUrl"), runId),
      REDIS_URL: inject("redisUrl"),
      REDIS_PREFIX: `${runId}:`,
      S3_ENDPOINT: inject("s3Endpoint"),
      S3_BUCKET: runId.replaceAll("_", "-").toLowerCase(),
      S3_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
      S3_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
      LOG_LEVEL: "warn",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    out += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    err += chunk.toString();
  });
  await new Promise<void>((done, fail) => {
    const timer = setInterval(() => {
      if (out.includes("Ctrl-C stops everything.")) {
        clearInterval(timer);
        done();
      } else if (child.exitCode !== null) {
        clearInterval(timer);
        fail(new Error(`npm start exited ${child.exitCode}:\n${out}\n${err}`));
      }
    }, 100);
  });
  const url = /^\s+API\s+(\S+)/m.exec(out)?.[1] ?? "";
  const lines = out.split("\n");
  const after = (prefix: string) => lines[lines.findIndex((l) => l.startsWith(prefix)) + 1]?.trim() ?? "";
  return { child, url, admin: after("admin token"), tenant: after("demo tenant token") };
}

let system: System;
let browser: Browser;
let context: BrowserContext;
const problems: string[] = [];

async function api<T>(
  path: string,
  init: { method?: string; body?: unknown; token?: string } = {},
): Promise<T> {
  const response = await fetch(`${system.url}${path}`, {
    method: init.method ?? "GET",
    headers: {
      authorization: `Bearer ${init.token ?? system.admin}`,
      ...(init.body !== undefined && { "content-type": "application/json" }),
    },
    ...(init.body !== undefined && { body: JSON.stringify(init.body) }),
  });
  const text = await response.text();
  if (!response.ok) {
    throw new Error(`${path}: ${response.status} ${text}`);
  }
  return (text ? JSON.parse(text) : null) as T;
}

async function chat(model: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await api("/v1/chat/completions", {
      method: "POST",
      token: system.tenant,
      body: { model, messages: [{ role: "user", content: `hello ${i}` }], max_tokens: 8 },
    });
  }
}

interface Demand {
  totals: { requests: number; prompt_tokens: number; completion_tokens: number };
  routing: { hit_rate: number | null; routed: Record<string, number> };
}

async function openPage(name: string): Promise<Page> {
  const page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") {
      problems.push(`${name}: console error: ${message.text()}`);
    }
  });
  page.on("pageerror", (error) => problems.push(`${name}: page error: ${error.message}`));
  await page.goto(`${system.url}/console/${name}`);
  return page;
}

const int = (n: number) => Math.round(n).toLocaleString("en-US");

describe.skipIf(executablePath === null)("admin console in chromium", () => {
  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    system = await startSystem();
    const created = await api<{ name: string }>("/v1/adapters", {
      method: "POST",
      token: system.tenant,
      body: { name: "console-demo", base_model: BASE.id },
    });
    const upload = await fetch(`${system.url}/v1/adapters/${created.name}/versions`, {
      method: "POST",
      headers: { authorization: `Bearer ${system.tenant}` },
      body: adapterForm(buildAdapter(BASE, { rank: 8, seed: 3 })),
    });
    expect(upload.status).toBe(201);
    await chat("console-demo", 6);
    await chat(BASE.id, 3);
    await eventually(async () => (await api<Demand>("/admin/stats/demand")).totals.requests === 9, 20_000);
    browser = await chromium.launch({
      executablePath: executablePath ?? "",
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    });
    context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    const token = system.admin;
    await context.addInitScript((t) => sessionStorage.setItem("loraplane.adminToken", t), token);
  }, 240_000);

  afterAll(async () => {
    await browser?.close();
    if (system?.child.exitCode === null) {
      system.child.kill("SIGTERM");
      await new Promise((done) => system.child.once("exit", done));
    }
  }, 60_000);

  it("asks for the token when none is kept, and the API refuses the data without it", async () => {
    const anonymous = await browser.newContext();
    const page = await anonymous.newPage();
    await page.goto(`${system.url}/console/fleet`);
    await expect.poll(() => page.locator("#login").isVisible()).toBe(true);
    expect((await fetch(`${system.url}/admin/stats/demand`)).status).toBe(401);
    await anonymous.close();
  });

  it("fleet: shows each replica as GET /admin/replicas does, and drains one from the UI", async () => {
    const page = await openPage("fleet");
    const replicas = await api<{ data: { id: string; status: string; max_loras: number }[] }>(
      "/admin/replicas",
    );
    expect(replicas.data).toHaveLength(2);
    for (const r of replicas.data) {
      const row = page.locator(`tr[data-replica-id="${r.id}"]`);
      await expect.poll(() => row.locator('td[data-field="status"]').textContent()).toBe(r.status);
      expect(await row.locator('td[data-field="gpu"]').textContent()).toMatch(
        new RegExp(`/ ${r.max_loras}$`),
      );
    }
    await expect.poll(() => page.getByTestId("fleet-replicas").textContent()).toBe("2");
    await page.screenshot({ path: join(SHOTS, "fleet.png"), fullPage: true });

    const target = replicas.data[1]?.id ?? "";
    page.once("dialog", (dialog) => void dialog.accept());
    await page.locator(`tr[data-replica-id="${target}"] button[data-action="drain"]`).click();
    await eventually(
      async () => (await api<{ status: string }>(`/admin/replicas/${target}`)).status === "draining",
      10_000,
    );
    await expect
      .poll(() => page.locator(`tr[data-replica-id="${target}"] td[data-field="status"]`).textContent(), {
        timeout: 10_000,
      })
      .toBe("draining");
    await page.screenshot({ path: join(SHOTS, "fleet-drained.png"), fullPage: true });
    await page.close();
  });

  it("demand: shows the API's totals and hit rate, and follows new traffic without a reload", async () => {
    const page = await openPage("demand");
    const demand = await api<Demand>("/admin/stats/demand?hours=6");
    await expect
      .poll(() => page.getByTestId("demand-requests").textContent())
      .toBe(int(demand.totals.requests));
    expect(await page.getByTestId("demand-prompt-tokens").textContent()).toBe(
      int(demand.totals.prompt_tokens),
    );
    expect(await page.getByTestId("demand-hit-rate").textContent()).toBe(
      demand.routing.hit_rate === null ? "–" : `${(demand.routing.hit_rate * 100).toFixed(1)}%`,
    );
    expect(await page.getByTestId("demand-requests-chart").isVisible()).toBe(true);
    await page.screenshot({ path: join(SHOTS, "demand.png"), fullPage: true });

    await chat("console-demo", 2);
    await expect
      .poll(() => page.getByTestId("demand-requests").textContent(), { timeout: 20_000 })
      .toBe(int(demand.totals.requests + 2));
    await page.close();
  });

  it("tenants: shows each tenant's month as GET /admin/stats/tenants does, with adapters and invoices", async () => {
    const page = await openPage("tenants");
    const stats = await api<{ data: { tenant_id: string; requests: number; tokens: number }[] }>(
      "/admin/stats/tenants",
    );
    const busiest = stats.data[0] ?? expect.unreachable();
    const row = page.locator(`tr[data-tenant-id="${busiest.tenant_id}"]`);
    await expect
      .poll(() => row.locator('td[data-field="requests"]').textContent())
      .toBe(int(busiest.requests));
    expect(await row.locator('td[data-field="tokens"]').textContent()).toBe(int(busiest.tokens));
    await row.locator('td[data-field="name"] a').click();
    await expect.poll(() => page.locator("#tenant-detail").textContent()).toContain("console-demo");
    await expect.poll(() => page.locator("#tenant-detail").textContent()).toContain("open");
    await page.screenshot({ path: join(SHOTS, "tenants.png"), fullPage: true });
    await page.close();
  });

  it("planner: shows the plan POST /admin/capacity/plan answers for the same assumptions", async () => {
    const page = await openPage("planner");
    // The GPU profile's assumptions are shown (and editable) before anything is planned.
    await expect.poll(() => page.locator('input[name="price_per_hour_usd"]').inputValue()).toBe("0.8");
    expect(await page.locator('input[name="decode_ms_per_step"]').inputValue()).toBe("22");
    await page.locator('input[name="adapters"]').fill("500");
    await page.locator('input[name="requests"]').fill("20000");
    await page.locator('input[name="replicas"]').fill("3");
    await page.locator("#planner-form button[type=submit]").click();
    await expect.poll(() => page.getByTestId("plan-hit-rate").isVisible(), { timeout: 20_000 }).toBe(true);
    const plan = await api<{
      hit_rate: number;
      cost_per_month_usd: { gpus: number };
      gpus_needed: { total: number | null };
    }>("/admin/capacity/plan", {
      method: "POST",
      body: {
        replicas: 3,
        max_loras: 8,
        max_cpu_loras: 16,
        max_registered: 64,
        policy: "gdsf",
        gpu: "nvidia-l4",
        frontier: { name: "frontier API", input_per_mtok_usd: 2.5, output_per_mtok_usd: 10 },
        target: { hit_rate: 0.95, utilization: 0.7 },
        trace: {
          synthetic: {
            adapters: 500,
            requests: 20000,
            rate_per_sec: 20,
            skew: 1,
            mean_prompt_tokens: 512,
            mean_completion_tokens: 256,
            seed: 1,
          },
        },
      },
    });
    expect(await page.getByTestId("plan-hit-rate").textContent()).toBe(
      `${(plan.hit_rate * 100).toFixed(1)}%`,
    );
    expect(await page.getByTestId("plan-gpu-cost").textContent()).toBe(
      `$${plan.cost_per_month_usd.gpus.toLocaleString("en-US", { maximumFractionDigits: 2, minimumFractionDigits: 2 })}`,
    );
    await page.screenshot({ path: join(SHOTS, "planner.png"), fullPage: true });

    await page.locator('input[name="price_per_hour_usd"]').fill("2");
    await page.locator("#planner-form button[type=submit]").click();
    await expect.poll(() => page.getByTestId("plan-gpu-cost").textContent()).toBe("$4,380.00");
    await page.close();
  });

  it("no page logged a console error", () => {
    expect(problems).toEqual([]);
  });
});
