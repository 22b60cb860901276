import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { pino } from "pino";
import { describe, expect, inject, it } from "vitest";
import { S3RVER_CREDENTIALS } from "../../infra/dev/s3-server.ts";
import { closeAll } from "../../lib/shutdown.ts";
import { cloneDatabase } from "../harness.ts";
import { databaseUrl } from "../setup/global.ts";

const silent = pino({ level: "silent" });

describe("graceful shutdown", () => {
  it("runs closers in order and reports success", async () => {
    const order: string[] = [];
    const ok = await closeAll(
      [
        { name: "http", close: async () => order.push("http") },
        { name: "db", close: async () => order.push("db") },
      ],
      1_000,
      silent,
    );
    expect(ok).toBe(true);
    expect(order).toEqual(["http", "db"]);
  });

  it("gives up at the deadline when a closer hangs, and keeps going past a failing one", async () => {
    const order: string[] = [];
    const started = Date.now();
    const ok = await closeAll(
      [
        { name: "broken", close: async () => Promise.reject(new Error("boom")) },
        { name: "after-broken", close: async () => order.push("after-broken") },
        { name: "stuck", close: () => new Promise(() => {}) },
      ],
      200,
      silent,
    );
    expect(ok).toBe(false);
    expect(order).toEqual(["after-broken"]);
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it("drains and exits 0 on SIGTERM (the real API process)", async () => {
    const db = await cloneDatabase();
    const child = spawn(process.execPath, [resolve(import.meta.dirname, "../../api/main.ts")], {
      env: {
        PATH: process.env.PATH ?? "",
        PORT: "0",
        LOG_LEVEL: "info",
        DATABASE_URL: databaseUrl(inject("pgBaseUrl"), db),
        REDIS_URL: inject("redisUrl"),
        S3_ENDPOINT: inject("s3Endpoint"),
        S3_BUCKET: `b-${db.replaceAll("_", "-")}`,
        S3_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
        S3_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
        KEY_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString("base64"),
        SHUTDOWN_TIMEOUT_MS: "5000",
        API_METRICS_PORT: "0",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d) => {
      output += d;
    });
    const url = await new Promise<string>((resolveUrl, reject) => {
      const timer = setTimeout(() => reject(new Error(`no 'api ready' line:\n${output}`)), 20_000);
      child.stdout.on("data", () => {
        const match = /"url":"([^"]+)".*"msg":"api ready"/.exec(output);
        if (match?.[1]) {
          clearTimeout(timer);
          resolveUrl(match[1]);
        }
      });
    });
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const started = Date.now();
    child.kill("SIGTERM");
    const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
    expect(code).toBe(0);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(output).toContain("shutting down");
  });
});
