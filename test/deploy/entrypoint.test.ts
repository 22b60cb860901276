import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, inject, it } from "vitest";
import { S3RVER_CREDENTIALS } from "../../infra/dev/s3-server.ts";
import { cloneDatabase } from "../harness.ts";
import { databaseUrl } from "../setup/global.ts";
import { ROOT } from "./deployment-files.ts";

/** The image's ENTRYPOINT runs `node infra/docker/entrypoint.ts <command>`: these tests run exactly that. */
const ENTRYPOINT = resolve(ROOT, "infra/docker/entrypoint.ts");
/** The image has no .env: run from a directory without one, so only the environment configures. */
const CWD = mkdtempSync(join(tmpdir(), "loraplane-entrypoint-"));

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

interface Running {
  child: ChildProcessWithoutNullStreams;
  output: () => string;
  /** The process exited and its output streams are closed: no more output will come. */
  closed: () => boolean;
}

function start(command: string, env: Record<string, string>): Running {
  const child = spawn(process.execPath, [ENTRYPOINT, command], {
    cwd: CWD,
    // No .env in the image: every setting comes from the environment.
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (d) => {
    output += d;
  });
  child.stderr.on("data", (d) => {
    output += d;
  });
  let closed = false;
  child.once("close", () => {
    closed = true;
  });
  return { child, output: () => output, closed: () => closed };
}

/** The first match of `pattern` in the process's output, checked as each chunk arrives. */
function waitFor(running: Running, pattern: RegExp, timeoutMs = 60_000): Promise<RegExpExecArray> {
  const { child } = running;
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      clearTimeout(timer);
      child.stdout.off("data", check);
      child.stderr.off("data", check);
      child.off("close", fail);
    };
    function check(): boolean {
      const match = pattern.exec(running.output());
      if (match) {
        done();
        resolve(match);
      }
      return match !== null;
    }
    function fail(): void {
      if (!check()) {
        done();
        reject(new Error(`no ${pattern} (exit ${child.exitCode}):\n${running.output()}`));
      }
    }
    if (check()) {
      return;
    }
    if (running.closed()) {
      fail();
      return;
    }
    timer = setTimeout(fail, timeoutMs);
    // Registered after start()'s listeners: each chunk is in the output by the time check runs.
    child.stdout.on("data", check);
    child.stderr.on("data", check);
    child.once("close", fail);
  });
}

async function stop(running: Running): Promise<number | null> {
  if (running.child.exitCode !== null) {
    return running.child.exitCode;
  }
  const exited = new Promise<number | null>((r) => running.child.once("exit", (code) => r(code)));
  running.child.kill("SIGTERM");
  return exited;
}

describe("the image's entry point", () => {
  const started: Running[] = [];
  afterAll(async () => {
    for (const running of started) {
      if (running.child.exitCode === null) {
        running.child.kill("SIGKILL");
      }
    }
  });

  it("starts api, scheduler and metering against Postgres, Redis and S3, and each drains on SIGTERM", async () => {
    const db = await cloneDatabase();
    const metricsPort = await freePort();
    const schedulerHealthPort = await freePort();
    const apiMetricsPort = await freePort();
    const env = {
      NODE_ENV: "production",
      LOG_LEVEL: "info",
      HOST: "127.0.0.1",
      PORT: "0",
      DATABASE_URL: databaseUrl(inject("pgBaseUrl"), db),
      DATABASE_POOL_SIZE: "3",
      REDIS_URL: inject("redisUrl"),
      REDIS_PREFIX: `${db}:`,
      S3_ENDPOINT: inject("s3Endpoint"),
      S3_BUCKET: `b-${db.replaceAll("_", "-")}`,
      S3_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
      S3_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
      KEY_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
      AGENT_TOKEN: randomBytes(24).toString("base64url"),
      METERING_METRICS_PORT: String(metricsPort),
      API_METRICS_PORT: String(apiMetricsPort),
      SCHEDULER_HEALTH_PORT: String(schedulerHealthPort),
      SHUTDOWN_TIMEOUT_MS: "15000",
    };

    const api = start("api", env);
    started.push(api);
    const url = (await waitFor(api, /"url":"([^"]+)".*"msg":"api ready"/))[1] as string;
    const scheduler = start("scheduler", env);
    const metering = start("metering", env);
    started.push(scheduler, metering);
    await waitFor(scheduler, /"msg":"scheduler ready/);
    await waitFor(metering, /"msg":"metering ready"/);

    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).toBe(200);
    expect(((await ready.json()) as { status: string }).status).toBe("ready");
    // The API's metrics on its own port, without a token; the public port wants an operator's.
    expect(await (await fetch(`http://127.0.0.1:${apiMetricsPort}/metrics`)).text()).toContain(
      "loraplane_http_requests_total",
    );
    expect((await fetch(`${url}/metrics`)).status).toBe(401);
    expect((await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).status).toBe(200);
    const schedulerHealth = await fetch(`http://127.0.0.1:${schedulerHealthPort}/healthz`);
    expect(schedulerHealth.status).toBe(200);
    expect(await schedulerHealth.json()).toMatchObject({ status: "ok" });
    expect(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()).toContain(
      "loraplane_usage_ingest_lag",
    );

    // The one-shot commands of the same image: an operator token, and migrations (idempotent).
    const token = spawnSync(process.execPath, [ENTRYPOINT, "token", "--admin", "--ttl", "600"], {
      cwd: CWD,
      env: { PATH: process.env.PATH ?? "", ...env, LOG_LEVEL: "silent" },
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(token.status).toBe(0);
    expect(token.stdout.trim()).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    const replicas = await fetch(`${url}/admin/replicas`, {
      headers: { authorization: `Bearer ${token.stdout.trim()}` },
    });
    expect(replicas.status).toBe(200);
    const migrate = spawnSync(process.execPath, [ENTRYPOINT, "migrate"], {
      cwd: CWD,
      env: { PATH: process.env.PATH ?? "", ...env },
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(migrate.status).toBe(0);
    expect(migrate.stdout).toContain("migrations applied");

    expect(await stop(api)).toBe(0);
    expect(await stop(scheduler)).toBe(0);
    expect(await stop(metering)).toBe(0);
  }, 150_000);

  it("refuses an unknown command with its usage, and passes flags through to the simulator", () => {
    const unknown = spawnSync(process.execPath, [ENTRYPOINT, "frontend"], { cwd: CWD, encoding: "utf8" });
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(
      /usage: node infra\/docker\/entrypoint\.ts <api\|scheduler\|metering\|agent\|/,
    );
    const help = spawnSync(process.execPath, [ENTRYPOINT, "replica-sim", "--help"], {
      cwd: CWD,
      encoding: "utf8",
      timeout: 20_000,
    });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain("--max-loras <n>");
    expect(help.stdout).toContain("--host <addr>");
  });

  it("exits 1 naming the variable when the agent starts without its configuration", () => {
    const agent = spawnSync(process.execPath, [ENTRYPOINT, "agent"], {
      cwd: CWD,
      env: { PATH: process.env.PATH ?? "" },
      encoding: "utf8",
      timeout: 20_000,
    });
    expect(agent.status).toBe(1);
    for (const variable of [
      "AGENT_TOKEN",
      "AGENT_REPLICA_URL",
      "AGENT_CACHE_DIR",
      "AGENT_DISK_BUDGET_BYTES",
    ]) {
      expect(agent.stderr).toMatch(new RegExp(`${variable}: is required`));
    }
  });
});
