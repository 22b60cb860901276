import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Config } from "../../lib/env.ts";
import { isListening } from "./services.ts";

const ROOT = resolve(import.meta.dirname, "../..");

export interface DevReplica {
  url: string;
  agentUrl: string;
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
 * Simulated vLLM replicas (`npm run replica-sim`), each with its agent sharing a cache folder, as
 * child processes: the same programs and protocol a production fleet runs, minus the GPU.
 */
export async function startDevFleet(options: {
  count: number;
  baseModelId: string;
  agentToken: string;
  s3: Config["s3"];
  stateDir: string;
  maxLoras: number;
  maxCpuLoras: number;
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
  for (let i = 0; i < options.count; i++) {
    const replicaPort = await freePort(8101 + i);
    const agentPort = await freePort(8201 + i);
    const cacheDir = resolve(options.stateDir, `replica-${i + 1}`);
    mkdirSync(cacheDir, { recursive: true });
    spawnChild(
      "infra/replica-sim/cli.ts",
      [
        "--port",
        String(replicaPort),
        "--served-model-name",
        options.baseModelId,
        "--max-loras",
        String(options.maxLoras),
        "--max-cpu-loras",
        String(options.maxCpuLoras),
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
    replicas.push({ url, agentUrl });
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
