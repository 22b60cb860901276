// bench/gateway: the same simulated upstream reached four ways in one run — directly, through
// loraplane's API alone (JWT verification, Redis rate limit, model resolution, routing), through the
// system as `npm start` runs it (the API sharing its process with the scheduler and metering), and
// through the Portkey gateway — under autocannon at several concurrencies, for instant answers and 20 ms TTFT streams.
// A fifth path, a bare Node proxy that only forwards (bare-proxy.ts), shows the floor any Node
// gateway starts from on this machine.
// Usage: node bench/gateway/run.ts [--runs 3] [--duration 5] [--warmup 1] [--concurrency 1,16,64,256]
//        [--workloads instant,stream] [--paths direct,loraplane,npmstart,portkey,bare] [--no-write]
// Diagnostics: BENCH_API_NODE_ARGS="--cpu-prof --cpu-prof-dir=DIR" profiles the API child (with
// --no-write: a profiled run is not a benchmark); bench/gateway/profile-top.ts summarizes the profile.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import autocannon from "autocannon";
import { Redis } from "ioredis";
import postgres from "postgres";
import { request } from "undici";
import { KeyRing } from "../../api/auth/key-ring.ts";
import { prepareDatabase } from "../../api/runtime.ts";
import { createDbHandle } from "../../db/client.ts";
import { recordReplicaSeen } from "../../db/queries/replicas.ts";
import { S3RVER_CREDENTIALS } from "../../infra/dev/s3-server.ts";
import { ensureServices, type RunningRedis, startRedisServer } from "../../infra/dev/services.ts";
import { parseConfig } from "../../lib/env.ts";
import { machineLine, median, writeBenchmarkSection } from "../lib/report.ts";
import { MORE_TOKENS, TOKEN_GAP_MS, TTFT_MS } from "./shared.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    duration: { type: "string", default: "5" },
    warmup: { type: "string", default: "1" },
    concurrency: { type: "string", default: "1,16,64,256" },
    workloads: { type: "string", default: "instant,stream" },
    paths: { type: "string", default: "direct,loraplane,npmstart,portkey,bare" },
    "no-write": { type: "boolean", default: false },
  },
});
const runs = Number(values.runs);
const durationS = Number(values.duration);
const warmupS = Number(values.warmup);
const concurrencies = values.concurrency.split(",").map(Number);
const root = resolve(import.meta.dirname, "../..");
const PG = "postgres://postgres@127.0.0.1:5432/postgres";
const REDIS = "redis://127.0.0.1:6379";
const BASE = "qwen2.5-7b-instruct-awq";
const LOG_LEVEL = "warn";
/** Seconds autocannon keeps going after the measured window, so the window ends in steady state. */
const TAIL_S = 0.5;
/**
 * The machine is shared: a cell during which other processes used more than this many cores is
 * measured again (up to MAX_ATTEMPTS, every path alike) after waiting for the machine to go quiet.
 */
const MAX_FOREIGN_CORES = 0.25;
const QUIET_CORES = 0.15;
const MAX_ATTEMPTS = 3;
/** Before the first run, each path is driven this long at this concurrency, per workload, unmeasured. */
const PREWARM_S = 3;
const PREWARM_CONNECTIONS = 16;
/** /proc's CPU ticks are USER_HZ, 100 per second on Linux. */
const TICK_US = 10_000;

type PathName = "direct" | "loraplane" | "npmstart" | "portkey" | "bare";
/** The gateways compared with Portkey: the API alone, and the system as `npm start` runs it. */
type OursName = "loraplane" | "npmstart";
const PATH_NAMES: readonly PathName[] = ["direct", "loraplane", "npmstart", "portkey", "bare"];
type WorkloadName = "instant" | "stream";
const PATHS = values.paths.split(",").filter((p): p is PathName => PATH_NAMES.includes(p as PathName));
const OURS = PATHS.filter((p): p is OursName => p === "loraplane" || p === "npmstart");
const WORKLOADS = values.workloads
  .split(",")
  .filter((w): w is WorkloadName => w === "instant" || w === "stream");

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

const children: ChildProcess[] = [];

function startChild(args: string[], env: Record<string, string>, cwd: string): ChildProcess {
  const child = spawn(process.execPath, args, {
    cwd,
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(child);
  return child;
}

function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolveLine, reject) => {
    let out = "";
    const onData = (d: Buffer) => {
      out += d;
      const newline = out.indexOf("\n");
      if (newline !== -1) {
        child.stdout?.off("data", onData);
        child.stdout?.resume();
        resolveLine(out.slice(0, newline).trim());
      }
    };
    child.stdout?.on("data", onData);
    child.once("exit", (code) => reject(new Error(`child exited ${code} before it was ready: ${out}`)));
  });
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      if (await check()) {
        return;
      }
    } catch (error) {
      last = `: ${(error as Error).message}`;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} was not ready within ${timeoutMs} ms${last}`);
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return;
  }
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  await exited;
  clearTimeout(timer);
}

interface Target {
  url: string;
  headers: Record<string, string>;
  /** The gateway's process, whose CPU per request the run reports (none for direct). */
  pid?: number;
}

interface Sample {
  /** Cores used by processes outside the bench during the cell. */
  foreign: number;
  /** CPU the gateway's process used per answered request (µs): robust where latency is noisy. */
  cpuUsPerRequest: number;
  rps: number;
  p50: number;
  p99: number;
  ok: number;
  non2xx: number;
  errors: number;
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) {
    return Number.NaN;
  }
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? Number.NaN;
}

function requestBody(workload: WorkloadName): string {
  return JSON.stringify({
    model: BASE,
    messages: [{ role: "user", content: "Say hello in one short sentence." }],
    max_tokens: 16,
    ...(workload === "stream" && { stream: true }),
  });
}

/**
 * One autocannon run of warm-up + measured window + a short tail on the same connections; only
 * responses that complete inside the measured window count, so neither connection set-up nor the
 * requests cut off at the stop skew the figures. Latencies are each response's own timing in float
 * ms (autocannon's histogram keeps whole milliseconds; the added latencies here are sub-ms).
 */
async function load(
  target: Target,
  workload: WorkloadName,
  connections: number,
  seconds = warmupS + durationS + TAIL_S,
): Promise<Sample> {
  const latencies: number[] = [];
  let non2xx = 0;
  let errors = 0;
  let from = Number.POSITIVE_INFINITY;
  let to = Number.POSITIVE_INFINITY;
  let finished: (error: Error | null) => void = () => {};
  const done = new Promise<void>((resolveDone, reject) => {
    finished = (error) => (error ? reject(error) : resolveDone());
  });
  const instance = autocannon(
    {
      url: target.url,
      method: "POST",
      headers: { "content-type": "application/json", ...target.headers },
      body: requestBody(workload),
      connections,
      duration: seconds,
      timeout: 10,
    },
    (error) => finished(error ?? null),
  );
  instance.on("start", () => {
    from = performance.now() + warmupS * 1000;
    to = from + durationS * 1000;
  });
  instance.on("response", (_client, statusCode, _bytes, responseTime) => {
    const now = performance.now();
    if (now < from || now > to) {
      return;
    }
    if (statusCode >= 200 && statusCode < 300) {
      latencies.push(responseTime);
    } else {
      non2xx++;
    }
  });
  instance.on("reqError", () => {
    const now = performance.now();
    if (now >= from && now <= to) {
      errors++;
    }
  });
  await done;
  const sorted = Float64Array.from(latencies).sort();
  return {
    rps: latencies.length / durationS,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    ok: latencies.length,
    non2xx,
    errors,
    foreign: 0,
    cpuUsPerRequest: Number.NaN,
  };
}

/** The loraplane code this run measures: the commit, and how many of its source files were edited on top. */
function describeCode(): string {
  try {
    const git = (...args: string[]) => execFileSync("git", args, { cwd: root }).toString().trim();
    const commit = git("rev-parse", "--short", "HEAD");
    const dirty = git("status", "--porcelain", "--", "api", "db", "lib", "metering", "scheduler", "adapters")
      .split("\n")
      .filter(Boolean).length;
    return dirty === 0
      ? `commit ${commit}`
      : `commit ${commit} plus uncommitted edits to ${dirty} source files`;
  } catch {
    return "an unknown commit (no git)";
  }
}

/** CPU ticks used so far by a process, from /proc/PID/stat (utime + stime); 0 once it is gone. */
function processTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
}

function machineTicks(): { busy: number; total: number } {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "")
    .trim()
    .split(/\s+/)
    .slice(1, 9)
    .map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  return { busy: total - (fields[3] ?? 0) - (fields[4] ?? 0), total };
}

/**
 * This bench's processes and their descendants (the simulated replicas and agents `npm start`
 * spawns), and Redis (which loraplane's rate limit keeps busy): the CPU that is "ours".
 */
function ownPids(): number[] {
  const parentOf = new Map<number, number>();
  const redis: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) {
      continue;
    }
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      parentOf.set(Number(d), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
      if (comm === "redis-server") {
        redis.push(Number(d));
      }
    } catch {
      // gone meanwhile
    }
  }
  const own = new Set([process.pid, ...children.map((c) => c.pid ?? 0)]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, parent] of parentOf) {
      if (!own.has(pid) && own.has(parent)) {
        own.add(pid);
        grew = true;
      }
    }
  }
  return [...own, ...redis];
}

function cpuSnapshot(pids: number[]) {
  return { machine: machineTicks(), own: pids.reduce((n, pid) => n + processTicks(pid), 0) };
}

/** Cores' worth of CPU that processes outside this bench used between two snapshots. */
function foreignCores(before: ReturnType<typeof cpuSnapshot>, after: ReturnType<typeof cpuSnapshot>): number {
  const total = after.machine.total - before.machine.total;
  const foreign = after.machine.busy - before.machine.busy - (after.own - before.own);
  return (Math.max(0, foreign) / Math.max(1, total)) * cpus().length;
}

/** Waits (at most `maxMs`) until the machine is nearly idle; this bench is idle meanwhile. Returns busy cores. */
async function waitQuiet(maxMs: number): Promise<number> {
  const deadline = Date.now() + maxMs;
  for (;;) {
    const before = machineTicks();
    await new Promise((r) => setTimeout(r, 1_000));
    const after = machineTicks();
    const busy = ((after.busy - before.busy) / Math.max(1, after.total - before.total)) * cpus().length;
    if (busy < QUIET_CORES || Date.now() >= deadline) {
      return busy;
    }
  }
}

/** One request per path and workload before measuring: a path that answers errors is not measured. */
async function checkPath(name: PathName, target: Target, workload: WorkloadName): Promise<void> {
  const res = await request(target.url, {
    method: "POST",
    headers: { "content-type": "application/json", ...target.headers },
    body: requestBody(workload),
  });
  const text = await res.body.text();
  const good =
    res.statusCode === 200 &&
    (workload === "stream"
      ? text.includes('"content":"Hello"') && text.trimEnd().endsWith("data: [DONE]")
      : text.includes('"content":"Hello!'));
  if (!good) {
    throw new Error(`${name} ${workload}: unexpected answer ${res.statusCode}: ${text.slice(0, 500)}`);
  }
}

const scratch = mkdtempSync(join(tmpdir(), "loraplane-bench-gateway-"));
let usageRedis: RunningRedis | undefined;
const dbName = `lp_bench_gateway_${Date.now().toString(36)}`;
const npmStartDbName = `${dbName}_npm_start`;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    for (const child of children) {
      child.kill("SIGTERM");
    }
    process.stderr.write(
      `interrupted: drop databases ${dbName} and ${npmStartDbName} and remove ${scratch} by hand\n`,
    );
    process.exit(130);
  });
}
const dbHandles: ReturnType<typeof createDbHandle>[] = [];
const samples = new Map<string, Sample[]>();
const background: number[] = [];
let remeasured = 0;
let contaminated = 0;
const key = (w: WorkloadName, c: number, p: PathName) => `${w}/${c}/${p}`;
const started = Date.now();
const measuredCode = describeCode();

try {
  await ensureServices({ databaseUrl: PG, redisUrl: REDIS });
  // Usage events go to a Redis that fsyncs every write, as in production: the cost of durability is
  // part of what is measured (the machine's Redis keeps nothing, which the API would not trust).
  usageRedis = await startRedisServer({ dir: join(scratch, "usage-redis"), durable: true });

  const upstreamChild = startChild([join(root, "bench/gateway/upstream.ts")], {}, scratch);
  const upstreamUrl = await firstLine(upstreamChild);
  const bareChild = startChild([join(root, "bench/gateway/bare-proxy.ts"), upstreamUrl], {}, scratch);
  const bareUrl = await firstLine(bareChild);
  const s3Child = startChild(
    [join(root, "bench/upload/s3-server-main.ts"), join(scratch, "s3")],
    {},
    scratch,
  );
  const s3Endpoint = await firstLine(s3Child);

  const apiPort = await freePort();
  const env = {
    DATABASE_URL: PG.replace(/\/postgres$/, `/${dbName}`),
    REDIS_URL: REDIS,
    USAGE_REDIS_URL: usageRedis.url,
    REDIS_PREFIX: `${dbName}:`,
    S3_ENDPOINT: s3Endpoint,
    S3_BUCKET: "bench-gateway",
    S3_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    S3_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
    KEY_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
    // Logging every request at info would measure pino, not the gateway: warnings and errors only.
    LOG_LEVEL,
    NODE_ENV: "production",
    HOST: "127.0.0.1",
    PORT: String(apiPort),
  };
  const config = parseConfig(env);
  await prepareDatabase(config);
  const apiUrl = `http://127.0.0.1:${apiPort}`;
  const apiChild = startChild(
    [...(process.env.BENCH_API_NODE_ARGS ?? "").split(" ").filter(Boolean), join(root, "api/main.ts")],
    env,
    scratch,
  );
  // Its warnings and errors (the only lines at LOG_LEVEL=warn) show in this run's output.
  apiChild.stdout?.pipe(process.stderr);
  await waitFor("the API", async () => (await fetch(`${apiUrl}/healthz`)).ok, 60_000);

  const portkeyPort = await freePort();
  // --headless and production: no log console and no log-streaming UI, the way it is deployed.
  const portkeyChild = startChild(
    [
      join(root, "node_modules/@portkey-ai/gateway/build/start-server.js"),
      `--port=${portkeyPort}`,
      "--headless",
    ],
    { NODE_ENV: "production" },
    scratch,
  );
  portkeyChild.stdout?.resume();
  const portkeyUrl = `http://127.0.0.1:${portkeyPort}`;
  await waitFor("Portkey", async () => (await fetch(`${portkeyUrl}/`)).ok, 30_000);

  // The system as `npm start` runs it: the API in one process with the scheduler leader, the
  // metering worker and the adapter cleanup, beside two simulated replicas of the dev base. The
  // upstream joins it as an instant replica of a base of its own (the scheduler polls it).
  const npmStartPort = await freePort();
  const npmStartEnv = {
    DATABASE_URL: PG.replace(/\/postgres$/, `/${npmStartDbName}`),
    REDIS_URL: REDIS,
    USAGE_REDIS_URL: usageRedis.url,
    REDIS_PREFIX: `${npmStartDbName}:`,
    S3_ENDPOINT: s3Endpoint,
    S3_BUCKET: "bench-gateway-npm-start",
    S3_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    S3_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
    KEY_ENCRYPTION_KEY: env.KEY_ENCRYPTION_KEY,
    AGENT_TOKEN: randomBytes(24).toString("base64url"),
    LOG_LEVEL,
    HOST: "127.0.0.1",
    PORT: String(npmStartPort),
    API_METRICS_PORT: String(await freePort()),
    METERING_METRICS_PORT: String(await freePort()),
  };
  const npmStartUrl = `http://127.0.0.1:${npmStartPort}`;
  let npmStartChild: ChildProcess | null = null;
  if (PATHS.includes("npmstart")) {
    const dir = join(scratch, "npm-start");
    mkdirSync(dir);
    npmStartChild = startChild([join(root, "infra/dev/start.ts")], npmStartEnv, dir);
    // It prints its URLs and tokens; its warnings and errors go to stderr, shown in this run's output.
    npmStartChild.stdout?.resume();
    await waitFor("the npm start system", async () => (await fetch(`${npmStartUrl}/healthz`)).ok, 120_000);
  }

  /** A tenant whose limits the run cannot reach, and the upstream as a replica: the tenant's token. */
  const prepare = async (gatewayUrl: string, databaseUrl: string): Promise<string> => {
    const handle = createDbHandle({ url: databaseUrl, poolSize: 1 });
    dbHandles.push(handle);
    const keyRing = await new KeyRing(handle.db, config.auth).init();
    const admin = (
      await keyRing.sign({ subject: "operator:bench", tenantId: null, scopes: ["admin"], ttlSeconds: 3600 })
    ).token;
    const call = async (method: string, path: string, token: string, body?: unknown) => {
      const res = await request(`${gatewayUrl}${path}`, {
        method: method as "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.body.text();
      if (res.statusCode >= 300) {
        throw new Error(`${method} ${path}: ${res.statusCode} ${text}`);
      }
      return JSON.parse(text);
    };
    // Limits far above what the run can reach: the Redis check runs on every request and never refuses.
    const tenant = await call("POST", "/admin/tenants", admin, {
      name: "bench-gateway",
      limits: { rpm: 2_000_000_000, tpm: 2_000_000_000 },
    });
    const token = (
      await call("POST", `/admin/tenants/${tenant.id}/tokens`, admin, {
        scope: "inference",
        ttl_seconds: 7200,
      })
    ).token as string;
    const replica = await call("POST", "/admin/replicas", admin, {
      url: upstreamUrl,
      base_model: BASE,
      max_loras: 1,
      max_cpu_loras: 1,
      max_lora_rank: 64,
    });
    // Marked up as a fleet poll would (the API-alone path has no poller), then the gateway's sync is awaited.
    await recordReplicaSeen(handle.db, replica.id, {
      liveState: { registeredAdapters: [], running: 0, waiting: 0, kvCacheUsage: null },
      seenAt: new Date(),
    });
    return token;
  };
  const tenantToken = await prepare(apiUrl, config.db.url);
  const npmStartToken = npmStartChild ? await prepare(npmStartUrl, npmStartEnv.DATABASE_URL) : "";

  const targets: Record<PathName, Target> = {
    direct: { url: `${upstreamUrl}/v1/chat/completions`, headers: {} },
    bare: {
      url: `${bareUrl}/v1/chat/completions`,
      headers: {},
      ...(bareChild.pid !== undefined && { pid: bareChild.pid }),
    },
    loraplane: {
      url: `${apiUrl}/v1/chat/completions`,
      headers: { authorization: `Bearer ${tenantToken}` },
      ...(apiChild.pid !== undefined && { pid: apiChild.pid }),
    },
    npmstart: {
      url: `${npmStartUrl}/v1/chat/completions`,
      headers: { authorization: `Bearer ${npmStartToken}` },
      ...(npmStartChild?.pid !== undefined && { pid: npmStartChild.pid }),
    },
    portkey: {
      ...(portkeyChild.pid !== undefined && { pid: portkeyChild.pid }),
      url: `${portkeyUrl}/v1/chat/completions`,
      headers: {
        authorization: "Bearer sk-bench",
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": `${upstreamUrl}/v1`,
      },
    },
  };
  await waitFor(
    "loraplane's route to the upstream",
    async () => {
      await checkPath("loraplane", targets.loraplane, "instant");
      return true;
    },
    15_000,
  );
  if (npmStartChild) {
    // Its router syncs on fleet events and on a timer: the new replica shows up within seconds.
    await waitFor(
      "the npm start system's route to the upstream",
      async () => {
        await checkPath("npmstart", targets.npmstart, "instant");
        return true;
      },
      30_000,
    );
  }
  for (const workload of WORKLOADS) {
    for (const path of PATHS) {
      await checkPath(path, targets[path], workload);
    }
  }

  // Every gateway's code is compiled by the JIT before anything is measured: the first cell (c=1)
  // would otherwise measure the interpreter, not the gateway, and the more code a gateway runs per
  // request the more that would cost it.
  for (const path of PATHS) {
    for (const workload of WORKLOADS) {
      await load(targets[path], workload, PREWARM_CONNECTIONS, PREWARM_S);
    }
  }
  const cells = runs * WORKLOADS.length * concurrencies.length * PATHS.length;
  process.stdout.write(
    `upstream ${upstreamUrl}, loraplane ${apiUrl}, Portkey ${portkeyUrl}; ${cells} cells of ${warmupS} + ${durationS} + ${TAIL_S} s\n`,
  );
  for (let run = 0; run < runs; run++) {
    const busy = await waitQuiet(60_000);
    background.push(busy);
    process.stdout.write(
      `run ${run + 1}: machine busy before it: ${busy.toFixed(2)} cores${busy >= QUIET_CORES ? "  !! not idle after 60 s" : ""}\n`,
    );
    // The path order rotates between runs so that no path always runs first (or after the same one).
    const order = PATHS.map((_, i) => PATHS[(i + run) % PATHS.length] as PathName);
    for (const workload of WORKLOADS) {
      for (const connections of concurrencies) {
        for (const path of order) {
          const pids = ownPids();
          let sample: Sample;
          for (let attempt = 1; ; attempt++) {
            const before = cpuSnapshot(pids);
            const gatewayPid = targets[path].pid;
            const gatewayTicks = gatewayPid === undefined ? 0 : processTicks(gatewayPid);
            sample = await load(targets[path], workload, connections);
            sample.foreign = foreignCores(before, cpuSnapshot(pids));
            if (gatewayPid !== undefined) {
              // The whole cell (warm-up and tail included) over the requests answered in it.
              const cellRequests = sample.ok * ((warmupS + durationS + TAIL_S) / durationS);
              sample.cpuUsPerRequest = ((processTicks(gatewayPid) - gatewayTicks) * TICK_US) / cellRequests;
            }
            if (sample.foreign <= MAX_FOREIGN_CORES) {
              break;
            }
            if (attempt >= MAX_ATTEMPTS) {
              contaminated++;
              break;
            }
            remeasured++;
            process.stdout.write(
              `  (${workload} c=${connections} ${path}: other processes used ${sample.foreign.toFixed(2)} cores; measuring again)\n`,
            );
            await waitQuiet(30_000);
          }
          const list = samples.get(key(workload, connections, path)) ?? [];
          list.push(sample);
          samples.set(key(workload, connections, path), list);
          const flag =
            (sample.non2xx + sample.errors > 0
              ? `  !! ${sample.non2xx} non-2xx, ${sample.errors} errors`
              : "") +
            (sample.foreign > MAX_FOREIGN_CORES
              ? `  !! other processes used ${sample.foreign.toFixed(2)} cores`
              : "");
          process.stdout.write(
            `run ${run + 1} ${workload.padEnd(7)} c=${String(connections).padStart(3)} ${path.padEnd(9)} ` +
              `${sample.rps.toFixed(0).padStart(6)} req/s  p50 ${sample.p50.toFixed(2)} ms  p99 ${sample.p99.toFixed(2)} ms  ` +
              `${Number.isNaN(sample.cpuUsPerRequest) ? "" : `CPU ${sample.cpuUsPerRequest.toFixed(0)} µs/req  `}other ${sample.foreign.toFixed(2)} cores${flag}\n`,
          );
        }
      }
    }
  }
} finally {
  for (const child of [...children].reverse()) {
    await stopChild(child);
  }
  await Promise.all(dbHandles.map((handle) => handle.close()));
  await usageRedis?.close();
  rmSync(scratch, { recursive: true, force: true });
  const adminSql = postgres(PG, { max: 1, onnotice: () => {} });
  for (const name of [dbName, npmStartDbName]) {
    await adminSql.unsafe(`drop database if exists "${name}" with (force)`);
  }
  await adminSql.end();
  // The API's keys (queues, rate-limit buckets, the usage-event stream no worker drains here).
  const redis = new Redis(REDIS);
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${dbName}*`, "COUNT", 1000);
    cursor = next;
    if (keys.length > 0) {
      await redis.unlink(...keys);
    }
  } while (cursor !== "0");
  redis.disconnect();
}

interface Cell {
  p50: number;
  p99: number;
  rps: number;
  addedP50: number;
  addedP99: number;
  non2xx: number;
  errors: number;
}

/** Medians over runs; added latency is taken per run against that run's direct figures, then the median. */
function cell(workload: WorkloadName, connections: number, path: PathName): Cell {
  const mine = samples.get(key(workload, connections, path)) ?? [];
  const direct = samples.get(key(workload, connections, "direct")) ?? [];
  return {
    p50: median(mine.map((s) => s.p50)),
    p99: median(mine.map((s) => s.p99)),
    rps: median(mine.map((s) => s.rps)),
    addedP50: median(mine.map((s, i) => s.p50 - (direct[i]?.p50 ?? Number.NaN))),
    addedP99: median(mine.map((s, i) => s.p99 - (direct[i]?.p99 ?? Number.NaN))),
    non2xx: mine.reduce((n, s) => n + s.non2xx, 0),
    errors: mine.reduce((n, s) => n + s.errors, 0),
  };
}

const ms = (x: number) => (Math.abs(x) < 10 ? x.toFixed(2) : x.toFixed(1));
const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
const WORKLOAD_LABEL: Record<WorkloadName, string> = {
  instant: "instant JSON",
  stream: `stream, ${TTFT_MS} ms TTFT`,
};

const LABEL: Record<OursName, string> = { loraplane: "loraplane", npmstart: "npm start" };
const BARE = PATHS.includes("bare");
/** Throughput at this concurrency must be at least this share of direct's (instant JSON). */
const THROUGHPUT_CONCURRENCY = 64;
const THROUGHPUT_SHARE = 0.4;

interface Figures {
  addedP50: number;
  addedP99: number;
  rps: number;
}
/** A cell's figures: the median over runs, or one run's. */
type Figure = (workload: WorkloadName, connections: number, path: PathName) => Figures;
const overRuns: Figure = (w, c, p) => cell(w, c, p);
const inRun =
  (run: number): Figure =>
  (w, c, p) => {
    const mine = samples.get(key(w, c, p))?.[run];
    const direct = samples.get(key(w, c, "direct"))?.[run];
    return {
      addedP50: (mine?.p50 ?? Number.NaN) - (direct?.p50 ?? Number.NaN),
      addedP99: (mine?.p99 ?? Number.NaN) - (direct?.p99 ?? Number.NaN),
      rps: mine?.rps ?? Number.NaN,
    };
  };

/** Where `ours` misses the latency targets against Portkey in `figure`'s figures (empty: met). */
function latencyMisses(figure: Figure, workload: WorkloadName, ours: OursName): string[] {
  const misses: string[] = [];
  for (const c of concurrencies) {
    const mine = figure(workload, c, ours);
    const theirs = figure(workload, c, "portkey");
    if (!(mine.addedP50 < theirs.addedP50)) {
      misses.push(`p50 at c=${c} (${ms(mine.addedP50)} vs ${ms(theirs.addedP50)} ms)`);
    }
    if (!(mine.addedP99 < theirs.addedP99)) {
      misses.push(`p99 at c=${c} (${ms(mine.addedP99)} vs ${ms(theirs.addedP99)} ms)`);
    }
  }
  return misses;
}

const latencyRows: string[] = [
  `| workload | conc. | direct p50 / p99 (ms) | ${OURS.map((o) => `${LABEL[o]} added p50 / p99 (ms)`).join(" | ")} | Portkey added p50 / p99 (ms) | ${OURS.map((o) => `${LABEL[o]} / Portkey, added p50 · p99`).join(" | ")} |`,
  `|---|---|---|${OURS.map(() => "---|").join("")}---|${OURS.map(() => "---|").join("")}`,
];
const throughputRows: string[] = [
  `| workload | conc. | direct req/s | ${OURS.map((o) => `${LABEL[o]} req/s`).join(" | ")} | Portkey req/s | ${OURS.map((o) => `${LABEL[o]} / Portkey · / direct`).join(" | ")} |${BARE ? " bare proxy req/s · / direct |" : ""}`,
  `|---|---|---|${OURS.map(() => "---|").join("")}---|${OURS.map(() => "---|").join("")}${BARE ? "---|" : ""}`,
];
const missed: string[] = [];
const verdicts: string[] = [];
let totalBad = 0;
for (const workload of WORKLOADS) {
  const label = WORKLOAD_LABEL[workload];
  for (const c of concurrencies) {
    const d = cell(workload, c, "direct");
    const p = cell(workload, c, "portkey");
    const ours = OURS.map((o) => cell(workload, c, o));
    totalBad += [d, p, ...ours].reduce((n, x) => n + x.non2xx + x.errors, 0);
    latencyRows.push(
      `| ${label} | ${c} | ${ms(d.p50)} / ${ms(d.p99)} | ${ours.map((o) => `${ms(o.addedP50)} / ${ms(o.addedP99)}`).join(" | ")} | ` +
        `${ms(p.addedP50)} / ${ms(p.addedP99)} | ${ours.map((o) => `${ratio(o.addedP50, p.addedP50)} · ${ratio(o.addedP99, p.addedP99)}`).join(" | ")} |`,
    );
    const bare = BARE ? cell(workload, c, "bare") : null;
    throughputRows.push(
      `| ${label} | ${c} | ${d.rps.toFixed(0)} | ${ours.map((o) => o.rps.toFixed(0)).join(" | ")} | ${p.rps.toFixed(0)} | ` +
        `${ours.map((o) => `${ratio(o.rps, p.rps)} · ${(100 * (o.rps / d.rps)).toFixed(0)} %`).join(" | ")} |` +
        (bare ? ` ${bare.rps.toFixed(0)} · ${(100 * (bare.rps / d.rps)).toFixed(0)} % |` : ""),
    );
  }
  const maxRps = (path: PathName) => Math.max(...concurrencies.map((c) => cell(workload, c, path).rps));
  for (const ours of OURS) {
    const misses = latencyMisses(overRuns, workload, ours);
    const perRun = Array.from({ length: runs }, (_, r) => latencyMisses(inRun(r), workload, ours));
    const runsMet = perRun.filter((m) => m.length === 0).length;
    verdicts.push(
      `- ${label}, ${LABEL[ours]}: added p50 and p99 below Portkey's at every concurrency (medians): ${misses.length === 0 ? "**met**" : `**MISSED**: ${misses.join(", ")}`}; in each run: met in ${runsMet} of ${runs}${perRun.some((m) => m.length > 0) ? ` (${perRun.map((m, r) => `run ${r + 1}: ${m.length === 0 ? "met" : m.join(", ")}`).join("; ")})` : ""}`,
    );
    const mine = maxRps(ours);
    const theirs = maxRps("portkey");
    verdicts.push(
      `- ${label}, ${LABEL[ours]}: max throughput ${mine.toFixed(0)} req/s vs Portkey's ${theirs.toFixed(0)} (${ratio(mine, theirs)}): ${mine > theirs ? "**met**" : "**MISSED**"}`,
    );
    let shareMissed = false;
    if (workload === "instant" && concurrencies.includes(THROUGHPUT_CONCURRENCY)) {
      const at = cell(workload, THROUGHPUT_CONCURRENCY, ours).rps;
      const direct = cell(workload, THROUGHPUT_CONCURRENCY, "direct").rps;
      shareMissed = !(at >= THROUGHPUT_SHARE * direct);
      const floor = BARE ? cell(workload, THROUGHPUT_CONCURRENCY, "bare").rps : null;
      verdicts.push(
        `- ${label}, ${LABEL[ours]}: throughput at c=${THROUGHPUT_CONCURRENCY} at least ${100 * THROUGHPUT_SHARE} % of direct's: ${(100 * (at / direct)).toFixed(0)} % (${at.toFixed(0)} of ${direct.toFixed(0)} req/s): ${shareMissed ? "**MISSED**" : "**met**"}` +
          (floor === null
            ? ""
            : ` (a bare proxy that only forwards: ${(100 * (floor / direct)).toFixed(0)} % of direct; ${LABEL[ours]} keeps ${(100 * (at / floor)).toFixed(0)} % of it)`),
      );
    }
    if (misses.length > 0 || runsMet < runs || !(mine > theirs) || shareMissed) {
      missed.push(`${label} (${LABEL[ours]})`);
    }
  }
}
const errorLine =
  totalBad === 0
    ? "Every measured response was a 2xx; no connection errors or timeouts."
    : `**${totalBad} non-2xx responses or connection errors were counted: figures with errors are not trustworthy** (see the run log).`;
const tables = `${latencyRows.join("\n")}\n\n${throughputRows.join("\n")}`;
const minutes = ((Date.now() - started) / 60_000).toFixed(1);
process.stdout.write(`\n${tables}\n\n${verdicts.join("\n")}\n\n${errorLine}\n(${minutes} min)\n`);

if (!values["no-write"]) {
  const flags = [
    `--runs ${runs}`,
    `--duration ${durationS}`,
    `--warmup ${warmupS}`,
    ...(values.concurrency === "1,16,64,256" ? [] : [`--concurrency ${values.concurrency}`]),
    ...(values.workloads === "instant,stream" ? [] : [`--workloads ${values.workloads}`]),
  ];
  writeBenchmarkSection(
    "bench/gateway — gateway overhead against Portkey",
    `Command: \`node bench/gateway/run.ts ${flags.join(" ")}\` (date ${new Date().toISOString().slice(0, 10)}, ${minutes} min)

Machine: ${machineLine()}; loraplane at ${measuredCode}

**Setup.** One simulated OpenAI-compatible upstream (\`bench/gateway/upstream.ts\`, its own process) answers
\`POST /v1/chat/completions\` either at once with a fixed JSON body (*instant JSON*), or as an SSE stream whose first
token comes after ${TTFT_MS} ms, then ${MORE_TOKENS} more ${TOKEN_GAP_MS} ms apart, a finish chunk and \`[DONE]\` (*stream*). It is reached
four ways (five with the bare proxy), each gateway in its own process: **direct**; **loraplane** (\`api/main.ts\` on a fresh database, base-model
request with a tenant JWT verified on every request, the tenant's rpm and tpm limits set far above reach so the
Redis token-bucket check runs on every request and never refuses, \`LOG_LEVEL=${LOG_LEVEL}\` and \`NODE_ENV=production\`);
**npm start** (\`infra/dev/start.ts\` as \`npm start\` runs it, on a database of its own: the API shares its process with
the scheduler leader, the metering worker draining the usage stream and the adapter cleanup, beside two simulated
replicas of the dev base that the scheduler polls; the upstream is added as an instant replica of a base of its own,
with the same tenant, limits and log level);
**Portkey** (\`@portkey-ai/gateway\` 1.15, \`--headless\`, \`NODE_ENV=production\`, routed with \`x-portkey-provider: openai\`
and \`x-portkey-custom-host\`; it has no auth or rate limit of its own here); and, where named in \`--paths\`, a **bare proxy** (\`bench/gateway/bare-proxy.ts\`: node:http in, an undici Pool out, bodies streamed, nothing else), the floor any Node gateway starts from on these shared cores (throughput only). Load: autocannon 9 in the benchmark process,
keep-alive connections = concurrency, ${durationS} s per cell after a ${warmupS} s warm-up (and, before the first run, ${PREWARM_S} s
per path and workload at c=${PREWARM_CONNECTIONS}, unmeasured, so that the JIT has compiled every gateway's code), ${runs} runs, the path order rotating
between runs. Latency is each response's full time (request sent → last byte), in float ms from every 2xx response;
*added* = the path's p50 or p99 minus direct's at the same concurrency in the same run, median over runs. Throughput
= 2xx responses per second, median over runs; *max* = the best concurrency. Client, gateways, upstream, Postgres and
Redis share this machine's cores, so the figures are relative, not absolute. The machine is shared with other work:
each run starts once it is quiet (busy cores before each run: ${background.map((b) => b.toFixed(2)).join(", ")}), and a cell
during which processes outside the bench (Redis counted as the bench's) used more than ${MAX_FOREIGN_CORES} cores is measured
again, every path alike, up to ${MAX_ATTEMPTS} times: ${remeasured} re-measurements; ${contaminated} cells kept above the limit
after ${MAX_ATTEMPTS} attempts.

${tables}

*CPU per request* (in the run log) is the gateway process's CPU time over the requests it answered in the cell.

**Targets** (for the API alone and for the npm start system: added p50 and p99 below Portkey's at every
concurrency, c=1 included, in the medians and in each run; max throughput above Portkey's; instant JSON throughput
at c=${THROUGHPUT_CONCURRENCY} at least ${100 * THROUGHPUT_SHARE} % of direct's):

${verdicts.join("\n")}

${errorLine}${missed.length > 0 ? `\n\nMissed targets: ${missed.join("; ")}.` : ""}`,
  );
}
