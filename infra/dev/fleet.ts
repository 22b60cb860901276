import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Config } from "../../lib/env.ts";
import { isListening } from "./services.ts";

const ROOT = resolve(import.meta.dirname, "../..");

export type DevEngine = "vllm" | "sglang";

export interface DevReplica {
  engine: DevEngine;
  url: string;
  agentUrl: string;
}

/**
 * `DEV_FLEET`: the engines of `npm start`'s simulated replicas, comma-separated (default
 * "vllm,vllm"; "vllm,sglang" is a mixed fleet, "sglang,sglang" an SGLang-only one).
 */
export function parseDevFleet(value: string | undefined): DevEngine[] {
  const engines = (value ?? "vllm,vllm").split(",").map((e) => e.trim());
  if (engines.length < 1 || engines.length > 8 || engines.some((e) => e !== "vllm" && e !== "sglang")) {
    throw new Error(`DEV_FLEET must list 1 to 8 engines, each vllm or sglang (got ${JSON.stringify(value)})`);
  }
  return engines as DevEngine[];
}

async function freePort(preferred: number): Promise<number> {
  if (!(await isListening("127.0.0.1", preferred))) {
    return preferred;
  }
  const { createServer } = await import("node:net");
  return new Promise((resolvePort) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

async function waitForHttp(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url);
      if (res.ok) {
        return;
      }
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms`);
}

/**
 * Simulated vLLM and SGLang replicas (`npm run replica-sim`), each with its agent sharing a cache
 * folder, as child processes: the same programs and protocols a production fleet runs, minus the GPU.
 */
export async function startDevFleet(options: {
  engines: readonly DevEngine[];
  baseModelId: string;
  agentToken: string;
  s3: Config["s3"];
  stateDir: string;
  maxLoras: number;
  /** vLLM's --max-cpu-loras, SGLang's --max-loaded-loras. */
  maxCpuLoras: Record<DevEngine, number>;
  maxLoraRank: number;
}): Promise<{ replicas: DevReplica[]; close: () => Promise<void> }> {
  const children: ChildProcess[] = [];
  const replicas: DevReplica[] = [];
  const spawnChild = (script: string, args: string[], env: Record<string, string>) => {
    const child = spawn(process.execPath, [join(ROOT, script), ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", ...env },
      stdio: ["ignore", "ignore", "inherit"],
    });
    children.push(child);
    return child;
  };
  for (const [i, engine] of options.engines.entries()) {
    // Each engine on ports of its own, so a replica's URL (its identity) never changes engine.
    const offset = engine === "vllm" ? 0 : 10;
    const replicaPort = await freePort(8101 + offset + i);
    const agentPort = await freePort(8201 + offset + i);
    const cacheDir = resolve(options.stateDir, `${engine}-${i + 1}`);
    mkdirSync(cacheDir, { recursive: true });
    const capacity =
      engine === "vllm"
        ? ["--max-loras", String(options.maxLoras), "--max-cpu-loras", String(options.maxCpuLoras.vllm)]
        : [
            "--engine",
            "sglang",
            "--max-loras-per-batch",
            String(options.maxLoras),
            "--max-loaded-loras",
            String(options.maxCpuLoras.sglang),
          ];
    spawnChild(
      "infra/replica-sim/cli.ts",
      [
        "--port",
        String(replicaPort),
        "--served-model-name",
        options.baseModelId,
        ...capacity,
        "--max-lora-rank",
        String(options.maxLoraRank),
      ],
      { VLLM_ALLOW_RUNTIME_LORA_UPDATING: "1" },
    );
    const url = `http://127.0.0.1:${replicaPort}`;
    spawnChild("adapters/agent/main.ts", [], {
      LOG_LEVEL: "warn",
      AGENT_HOST: "127.0.0.1",
      AGENT_PORT: String(agentPort),
      AGENT_TOKEN: options.agentToken,
      AGENT_REPLICA_URL: url,
      AGENT_ENGINE: engine,
      AGENT_CACHE_DIR: cacheDir,
      AGENT_DISK_BUDGET_BYTES: String(20 * 1024 ** 3),
      S3_REGION: options.s3.region,
      S3_BUCKET: options.s3.bucket,
      S3_FORCE_PATH_STYLE: String(options.s3.forcePathStyle),
      ...(options.s3.endpoint !== undefined && { S3_ENDPOINT: options.s3.endpoint }),
      ...(options.s3.accessKeyId !== undefined && { S3_ACCESS_KEY_ID: options.s3.accessKeyId }),
      ...(options.s3.secretAccessKey !== undefined && { S3_SECRET_ACCESS_KEY: options.s3.secretAccessKey }),
    });
    const agentUrl = `http://127.0.0.1:${agentPort}`;
    await waitForHttp(`${url}/health`, 30_000);
    await waitForHttp(`${agentUrl}/healthz`, 30_000);
    replicas.push({ engine, url, agentUrl });
  }
  return {
    replicas,
    close: async () => {
      await Promise.all(
        children.map(
          (child) =>
            new Promise<void>((done) => {
              if (child.exitCode !== null) {
                done();
                return;
              }
              child.once("exit", () => done());
              child.kill("SIGTERM");
            }),
        ),
      );
    },
  };
}
