import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import type { Config } from "../lib/env.ts";

export interface ApiProcess {
  url: string;
  pid: number;
  /** Resident memory of the process now, in bytes (Linux /proc). */
  rss: () => number;
  kill: () => void;
}

export interface ApiProcessOptions {
  /**
   * Runs the API ahead of everything else on this machine in the CPU scheduler (nice -10, where the
   * user may raise priorities, as root can), for tests that time the API's own event loop: on a
   * 2-core machine the clients, replicas and databases of a test otherwise take the cores the API
   * waits for, and that wait reads as event-loop delay although the API's loop was free. In
   * production those clients are other machines. Each thread inherits the priority, workers too.
   */
  favoured?: boolean;
}

/**
 * The real API process (`api/main.ts`) on a test world's database, Redis and bucket, on a free port:
 * for what only a separate process shows (its memory, a crash, a second copy).
 */
export async function startApiProcess(
  config: Config,
  env: Record<string, string> = {},
  options: ApiProcessOptions = {},
): Promise<ApiProcess> {
  const main = [process.execPath, resolve(import.meta.dirname, "../api/main.ts")];
  const command = options.favoured && process.getuid?.() === 0 ? ["nice", "-n", "-10", ...main] : main;
  const child: ChildProcess = spawn(command[0] ?? process.execPath, command.slice(1), {
    env: {
      PATH: process.env.PATH ?? "",
      PORT: "0",
      LOG_LEVEL: "info",
      DATABASE_URL: config.db.url,
      REDIS_URL: config.redis.url,
      USAGE_REDIS_URL: config.usage.redis.url,
      REDIS_PREFIX: config.redis.prefix,
      S3_ENDPOINT: config.s3.endpoint ?? "",
      S3_BUCKET: config.s3.bucket,
      S3_ACCESS_KEY_ID: config.s3.accessKeyId ?? "",
      S3_SECRET_ACCESS_KEY: config.s3.secretAccessKey ?? "",
      KEY_ENCRYPTION_KEY: config.auth.keyEncryptionKey.toString("base64"),
      API_METRICS_PORT: "0",
      ...env,
    },
    stdio: ["ignore", "pipe", "ignore"],
  });
  let log = "";
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`API did not start:\n${log}`)), 20_000);
    child.stdout?.on("data", (d) => {
      log += d;
      const match = /"url":"([^"]+)".*"msg":"api ready"/.exec(log);
      if (match?.[1]) {
        clearTimeout(timer);
        resolveUrl(match[1]);
      }
    });
  });
  child.stdout?.resume();
  const pid = child.pid ?? 0;
  // The API dies with the test process too, should that end without calling kill() (a worker torn
  // down, a hook that timed out): an API child of a diagnostic run was found alive 40 minutes later.
  const killChild = () => child.kill("SIGKILL");
  process.once("exit", killChild);
  return {
    url,
    pid,
    rss: () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) * 1024,
    kill: () => {
      process.off("exit", killChild);
      killChild();
    },
  };
}
