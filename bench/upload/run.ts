// bench/upload: stream a ~1 GB adapter through loraplane's upload endpoint (parse, hash, validate,
// multipart to S3) and compare with a raw lib-storage upload of the same bytes, in the same run.
// Usage: node bench/upload/run.ts [--runs 3]
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Readable } from "node:stream";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { request } from "undici";
import { KeyRing } from "../../api/auth/key-ring.ts";
import { prepareDatabase } from "../../api/runtime.ts";
import { createDbHandle } from "../../db/client.ts";
import { S3RVER_CREDENTIALS } from "../../infra/dev/s3-server.ts";
import { ensureServices } from "../../infra/dev/services.ts";
import { parseConfig } from "../../lib/env.ts";
import { machineLine, median, writeBenchmarkSection } from "../lib/report.ts";
import { BENCH_BASE, benchConfig, benchModel, rssKiB } from "./shared.ts";

const { values } = parseArgs({ options: { runs: { type: "string", default: "3" } } });
const runs = Number(values.runs);
const root = resolve(import.meta.dirname, "../..");
const PG = "postgres://postgres@127.0.0.1:5432/postgres";

await ensureServices({ databaseUrl: PG, redisUrl: "redis://127.0.0.1:6379" });
const scratch = mkdtempSync(join(tmpdir(), "loraplane-bench-upload-"));
const s3Process = spawn(
  process.execPath,
  [join(root, "bench/upload/s3-server-main.ts"), join(scratch, "s3")],
  {
    stdio: ["ignore", "pipe", "inherit"],
  },
);
const s3 = {
  endpoint: await new Promise<string>((resolveEndpoint) => {
    s3Process.stdout?.once("data", (d) => resolveEndpoint(String(d).trim()));
  }),
  close: async () => {
    s3Process.kill("SIGTERM");
    await new Promise((r) => s3Process.once("exit", r));
  },
};
const dbName = `lp_bench_upload_${Date.now().toString(36)}`;
const env = {
  DATABASE_URL: PG.replace(/\/postgres$/, `/${dbName}`),
  REDIS_PREFIX: `${dbName}:`,
  S3_ENDPOINT: s3.endpoint,
  S3_BUCKET: "bench-upload",
  S3_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
  S3_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
  KEY_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
  LOG_LEVEL: "info",
  PORT: "0",
};
const config = parseConfig(env);
await prepareDatabase(config);

const api = spawn(
  process.execPath,
  [...(process.env.BENCH_API_NODE_ARGS ?? "").split(" ").filter(Boolean), join(root, "api/main.ts")],
  {
    cwd: scratch,
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  },
);
const apiUrl = await new Promise<string>((resolveUrl, reject) => {
  let log = "";
  api.stdout?.on("data", (d) => {
    log += d;
    const match = /"url":"([^"]+)".*"msg":"api ready"/.exec(log);
    if (match?.[1]) {
      resolveUrl(match[1]);
    }
  });
  api.once("exit", (code) => reject(new Error(`api exited ${code}: ${log}`)));
});
api.stdout?.resume();

const db = createDbHandle({ url: config.db.url, poolSize: 1 });
const keyRing = await new KeyRing(db.db, config.auth).init();
const admin = (
  await keyRing.sign({ subject: "operator:bench", tenantId: null, scopes: ["admin"], ttlSeconds: 3600 })
).token;

async function call(method: string, path: string, token: string, body?: unknown) {
  const res = await request(`${apiUrl}${path}`, {
    method: method as "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.body.text();
  if (res.statusCode >= 300) {
    throw new Error(`${method} ${path}: ${res.statusCode} ${text}`);
  }
  return JSON.parse(text);
}

await call("POST", "/admin/base-models", admin, {
  id: BENCH_BASE.id,
  hf_name: BENCH_BASE.hfName,
  quantization: "awq",
  architecture: BENCH_BASE.architecture,
  lora: { max_rank: 128, target_modules: BENCH_BASE.loraTargetModules },
  price: { input_per_mtok_usd: 0.1, output_per_mtok_usd: 0.3 },
});
const tenant = await call("POST", "/admin/tenants", admin, { name: "bench" });
const tenantToken = (
  await call("POST", `/admin/tenants/${tenant.id}/tokens`, admin, { scope: "adapters:read adapters:write" })
).token as string;
await call("POST", "/v1/adapters", tenantToken, { name: "big", base_model: BENCH_BASE.id });

function resetPeak(pid: number) {
  // Writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS.
  writeFileSync(`/proc/${pid}/clear_refs`, "5");
}

async function uploadThroughLoraplane(pid: number) {
  const boundary = `----loraplane-bench-${randomBytes(8).toString("hex")}`;
  const model = benchModel();
  const config = benchConfig();
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="adapter_config"; filename="adapter_config.json"\r\n` +
      `Content-Type: application/json\r\n\r\n`,
  );
  const mid = Buffer.from(
    `\r\n--${boundary}\r\nContent-Disposition: form-data; name="adapter_model"; filename="adapter_model.safetensors"\r\n` +
      "Content-Type: application/octet-stream\r\n\r\n",
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  function* body() {
    yield head;
    yield config;
    yield mid;
    yield* model.chunks();
    yield tail;
  }
  const length = head.length + config.length + mid.length + model.totalSize + tail.length;
  resetPeak(pid);
  const before = rssKiB(pid, "VmRSS");
  const started = performance.now();
  const res = await request(`${apiUrl}/v1/adapters/big/versions`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${tenantToken}`,
      "content-type": `multipart/form-data; boundary=${boundary}`,
      "content-length": String(length),
    },
    body: Readable.from(body()),
  });
  const text = await res.body.text();
  const ms = performance.now() - started;
  if (res.statusCode !== 201) {
    throw new Error(`upload failed: ${res.statusCode} ${text}`);
  }
  return { ms, bytes: model.totalSize, rssGrowthKiB: rssKiB(pid, "VmHWM") - before };
}

async function rawUpload(run: number) {
  const child: ChildProcess = spawn(
    process.execPath,
    [join(root, "bench/upload/raw-upload.ts"), s3.endpoint, "bench-upload", `raw/run-${run}`],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  await new Promise((r) => child.once("exit", r));
  return JSON.parse(out) as { ms: number; bytes: number; rssGrowthKiB: number };
}

const ours: { ms: number; bytes: number; rssGrowthKiB: number }[] = [];
const raw: { ms: number; bytes: number; rssGrowthKiB: number }[] = [];
for (let run = 0; run < runs; run++) {
  raw.push(await rawUpload(run));
  ours.push(await uploadThroughLoraplane(api.pid ?? 0));
  const r = raw.at(-1);
  const o = ours.at(-1);
  process.stdout.write(
    `run ${run + 1}: raw ${((r?.bytes ?? 0) / 2 ** 20 / ((r?.ms ?? 1) / 1000)).toFixed(0)} MiB/s, ` +
      `loraplane ${((o?.bytes ?? 0) / 2 ** 20 / ((o?.ms ?? 1) / 1000)).toFixed(0)} MiB/s, ` +
      `api RSS growth ${((o?.rssGrowthKiB ?? 0) / 1024).toFixed(1)} MiB\n`,
  );
}

api.kill("SIGTERM");
await new Promise((r) => api.once("exit", r));
await db.close();
await s3.close();
rmSync(scratch, { recursive: true, force: true });
const adminSql = postgres(PG, { max: 1, onnotice: () => {} });
await adminSql.unsafe(`drop database if exists "${dbName}" with (force)`);
await adminSql.end();

const mibps = (x: { ms: number; bytes: number }) => x.bytes / 2 ** 20 / (x.ms / 1000);
const bytes = ours[0]?.bytes ?? 0;
const oursMedian = median(ours.map(mibps));
const rawMedian = median(raw.map(mibps));
const ratio = oursMedian / rawMedian;
const growth = median(ours.map((o) => o.rssGrowthKiB / 1024));
const rawGrowth = median(raw.map((o) => o.rssGrowthKiB / 1024));
const table = [
  "| path | median throughput (MiB/s) | runs (MiB/s) | median peak RSS growth (MiB) | runs (MiB) |",
  "|---|---|---|---|---|",
  `| raw lib-storage upload (same bytes, same part size) | ${rawMedian.toFixed(0)} | ${raw.map((x) => mibps(x).toFixed(0)).join(", ")} | ${rawGrowth.toFixed(1)} | ${raw.map((x) => (x.rssGrowthKiB / 1024).toFixed(0)).join(", ")} |`,
  `| loraplane \`POST /v1/adapters/{name}/versions\` (HTTP multipart → parse, SHA-256, validate → S3) | ${oursMedian.toFixed(0)} | ${ours.map((x) => mibps(x).toFixed(0)).join(", ")} | ${growth.toFixed(1)} (API process) | ${ours.map((x) => (x.rssGrowthKiB / 1024).toFixed(0)).join(", ")} |`,
].join("\n");
const verdict = [
  `- throughput ratio loraplane / raw: **${ratio.toFixed(2)}×** (target ≥ 0.8×): ${ratio >= 0.8 ? "met" : "MISSED"}`,
  `- API peak RSS growth during the upload: **${growth.toFixed(1)} MiB** (target < 64 MiB): ${growth < 64 ? "met" : "MISSED"}`,
].join("\n");
process.stdout.write(`\n${table}\n\n${verdict}\n`);
writeBenchmarkSection(
  "bench/upload — streaming adapter upload",
  `Command: \`node bench/upload/run.ts --runs ${runs}\` (date ${new Date().toISOString().slice(0, 10)})

Machine: ${machineLine()}

Adapter: Llama-3.1-8B shapes, all-linear, rank 96, F32: ${(bytes / 2 ** 30).toFixed(2)} GiB (${bytes} bytes), generated on the fly by the client.
Both paths write to the same s3rver (its own process, local disk) with 5 MiB parts, 2 in flight; the
client, the API and s3rver are three processes on this machine's cores. RSS growth = peak RSS
(VmHWM, reset through /proc/PID/clear_refs before each upload) minus RSS at the start. Medians of ${runs} runs,
alternating raw and loraplane.

${table}

${verdict}`,
);
