// bench/metering: sustained ingest of usage events from the Redis stream into Postgres (raw rows +
// hourly rollups, idempotent), by the real metering worker processes, with a count check that nothing
// was lost or duplicated. The peer in the same run: the common row-at-a-time design (one transaction
// per event: insert ON CONFLICT DO NOTHING, then upsert its rollup).
// Usage: node bench/metering/run.ts [--events 300000] [--runs 3]
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { prepareDatabase } from "../../api/runtime.ts";
import { createDbHandle } from "../../db/client.ts";
import { ingestUsageEvents } from "../../db/queries/usage.ts";
import { ensureServices } from "../../infra/dev/services.ts";
import { parseConfig } from "../../lib/env.ts";
import { createRedis } from "../../lib/redis.ts";
import type { UsageEvent } from "../../metering/events.ts";
import { toRow } from "../../metering/store.ts";
import { USAGE_CONSUMER_GROUP, usageStreamKey } from "../../metering/stream.ts";
import { machineLine, median, writeBenchmarkSection } from "../lib/report.ts";

const { values } = parseArgs({
  options: { events: { type: "string", default: "300000" }, runs: { type: "string", default: "3" } },
});
const total = Number(values.events);
const runs = Number(values.runs);
const peerEvents = Math.min(total, 20_000);
const DUPLICATE_EVERY = 100; // 1 % of the events are delivered twice, as a redelivery would
const root = resolve(import.meta.dirname, "../..");
const PG = "postgres://postgres@127.0.0.1:5432/postgres";
await ensureServices({ databaseUrl: PG, redisUrl: "redis://127.0.0.1:6379" });

function makeEvent(run: string, i: number): UsageEvent {
  return {
    id: `req_${run}_${i}`,
    requestId: `client-${i % 1000}`,
    tenantId: `ten_bench_${i % 200}`,
    adapterId: `adp_${i % 5000}`,
    adapterVersionId: `ver_${i % 5000}`,
    baseModelId: "llama-3.1-8b-instruct-awq",
    replicaId: `rep_${i % 8}`,
    status: "ok",
    servedBy: "fleet",
    promptTokens: 200 + (i % 300),
    completionTokens: 50 + (i % 150),
    cachedTokens: 0,
    costPicos: String((200 + (i % 300)) * 120_000 + (50 + (i % 150)) * 360_000),
    ttftMs: 30,
    totalMs: 400,
    occurredAt: new Date(Date.UTC(2026, 10, 23, i % 24, (i * 7) % 60)).toISOString(),
  };
}

async function freshWorld() {
  const name = `lp_bench_metering_${Date.now().toString(36)}_${randomBytes(2).toString("hex")}`;
  const env = {
    DATABASE_URL: PG.replace(/\/postgres$/, `/${name}`),
    REDIS_PREFIX: `${name}:`,
    KEY_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
  };
  await prepareDatabase(parseConfig(env));
  return { name, env, config: parseConfig(env) };
}

async function dropDatabase(name: string) {
  const sql = postgres(PG, { max: 1, onnotice: () => {} });
  await sql.unsafe(`drop database if exists "${name}" with (force)`);
  await sql.end();
}

async function checkCounts(url: string, expected: { n: number; tokens: bigint; cost: bigint }) {
  const sql = postgres(url, { max: 1 });
  const [raw] =
    await sql`select count(*)::int as n, sum(prompt_tokens + completion_tokens)::text as tokens, sum(cost_picos)::text as cost from usage_events`;
  const [rolled] =
    await sql`select sum(requests)::int as n, sum(prompt_tokens + completion_tokens)::text as tokens, sum(cost_picos)::text as cost from usage_rollups`;
  await sql.end();
  const ok =
    raw?.n === expected.n &&
    rolled?.n === expected.n &&
    BigInt(raw?.tokens ?? 0) === expected.tokens &&
    BigInt(rolled?.tokens ?? 0) === expected.tokens &&
    BigInt(raw?.cost ?? 0) === expected.cost &&
    BigInt(rolled?.cost ?? 0) === expected.cost;
  return { ok, raw, rolled };
}

function expectedTotals(run: string, n: number) {
  let tokens = 0n;
  let cost = 0n;
  for (let i = 0; i < n; i++) {
    const e = makeEvent(run, i);
    tokens += BigInt(e.promptTokens + e.completionTokens);
    cost += BigInt(e.costPicos);
  }
  return { n, tokens, cost };
}

/** The real path: events preloaded into the stream, then `workers` metering processes drain it. */
async function runOurs(workers: number, run: string) {
  const world = await freshWorld();
  const redis = createRedis(world.config.redis, "producer");
  const stream = usageStreamKey(world.config.redis);
  let sent = 0;
  for (let start = 0; start < total; start += 2_000) {
    const pipeline = redis.pipeline();
    for (let i = start; i < Math.min(total, start + 2_000); i++) {
      const payload = JSON.stringify(makeEvent(run, i));
      pipeline.xadd(stream, "*", "e", payload);
      sent++;
      if (i % DUPLICATE_EVERY === 0) {
        pipeline.xadd(stream, "*", "e", payload);
        sent++;
      }
    }
    await pipeline.exec();
  }
  const started = performance.now();
  const children = Array.from({ length: workers }, () =>
    spawn(process.execPath, [join(root, "metering/main.ts")], {
      env: {
        PATH: process.env.PATH ?? "",
        ...world.env,
        LOG_LEVEL: "warn",
        METERING_BATCH_SIZE: "2000",
        METERING_METRICS_PORT: "0",
      },
      stdio: ["ignore", "ignore", "inherit"],
    }),
  );
  for (;;) {
    await new Promise((r) => setTimeout(r, 50));
    const groups = (await redis.xinfo("GROUPS", stream).catch(() => [])) as unknown[][];
    const group = groups.find((g) => g[1] === USAGE_CONSUMER_GROUP);
    if (group) {
      const fields = Object.fromEntries(
        Array.from({ length: group.length / 2 }, (_, k) => [group[k * 2], group[k * 2 + 1]]),
      );
      if (
        Number(fields.lag) === 0 &&
        Number(fields.pending) === 0 &&
        Number(fields["entries-read"]) >= sent
      ) {
        break;
      }
    }
  }
  const seconds = (performance.now() - started) / 1000;
  for (const child of children) {
    child.kill("SIGTERM");
  }
  await Promise.all(children.map((c) => new Promise((r) => c.once("exit", r))));
  const check = await checkCounts(world.config.db.url, expectedTotals(run, total));
  redis.disconnect();
  await dropDatabase(world.name);
  return { eventsPerSecond: sent / seconds, stored: check.raw?.n ?? 0, sent, ok: check.ok, seconds };
}

/** The peer: one transaction per event, through the same idempotent statement. */
async function runPeer(run: string) {
  const world = await freshWorld();
  const db = createDbHandle({ url: world.config.db.url, poolSize: 4 });
  const started = performance.now();
  const inFlight = new Set<Promise<unknown>>();
  for (let i = 0; i < peerEvents; i++) {
    const task = ingestUsageEvents(db.db, [toRow(makeEvent(run, i))]).finally(() => inFlight.delete(task));
    inFlight.add(task);
    if (inFlight.size >= 4) {
      await Promise.race(inFlight);
    }
  }
  await Promise.all(inFlight);
  const seconds = (performance.now() - started) / 1000;
  await db.close();
  const check = await checkCounts(world.config.db.url, expectedTotals(run, peerEvents));
  await dropDatabase(world.name);
  return { eventsPerSecond: peerEvents / seconds, ok: check.ok };
}

const results: { one: number[]; two: number[]; peer: number[]; ok: boolean } = {
  one: [],
  two: [],
  peer: [],
  ok: true,
};
for (let r = 0; r < runs; r++) {
  const peer = await runPeer(`p${r}`);
  const one = await runOurs(1, `a${r}`);
  const two = await runOurs(2, `b${r}`);
  results.peer.push(peer.eventsPerSecond);
  results.one.push(one.eventsPerSecond);
  results.two.push(two.eventsPerSecond);
  results.ok &&= peer.ok && one.ok && two.ok;
  process.stdout.write(
    `run ${r + 1}: row-at-a-time ${peer.eventsPerSecond.toFixed(0)}/s (${peer.ok ? "exact" : "MISMATCH"}), ` +
      `1 worker ${one.eventsPerSecond.toFixed(0)}/s (${one.stored}/${total} stored, ${one.ok ? "exact" : "MISMATCH"}), ` +
      `2 workers ${two.eventsPerSecond.toFixed(0)}/s (${two.ok ? "exact" : "MISMATCH"})\n`,
  );
}
const one = median(results.one);
const two = median(results.two);
const peer = median(results.peer);
const best = Math.max(one, two);
const table = [
  "| path | median events/s | runs (events/s) | ratio to row-at-a-time |",
  "|---|---|---|---|",
  `| row-at-a-time peer (1 event per transaction, 4 in parallel; ${peerEvents} events) | ${peer.toFixed(0)} | ${results.peer.map((x) => x.toFixed(0)).join(", ")} | 1.00× |`,
  `| loraplane, 1 metering worker (${total} events + 1 % redelivered) | ${one.toFixed(0)} | ${results.one.map((x) => x.toFixed(0)).join(", ")} | ${(one / peer).toFixed(1)}× |`,
  `| loraplane, 2 metering workers (same) | ${two.toFixed(0)} | ${results.two.map((x) => x.toFixed(0)).join(", ")} | ${(two / peer).toFixed(1)}× |`,
].join("\n");
const verdict = [
  `- count check (raw rows and rollups = the unique events sent; tokens and picodollars exact): **${results.ok ? "passed in every run" : "FAILED"}**`,
  `- target ≥ 10,000 events/s with zero loss: **${best >= 10_000 && results.ok ? "met" : "MISSED"}** (best median ${best.toFixed(0)} events/s)`,
].join("\n");
process.stdout.write(`\n${table}\n\n${verdict}\n`);
writeBenchmarkSection(
  "bench/metering — usage event ingest",
  `Command: \`node bench/metering/run.ts --events ${total} --runs ${runs}\` (date ${new Date().toISOString().slice(0, 10)})

Machine: ${machineLine()}; Postgres 15 and Redis 7 on the same machine.

Each run preloads the Redis stream with ${total} events (1 % of them delivered twice), then starts the metering
worker process(es) (\`metering/main.ts\`, batches of 2,000) and times until the consumer group has read and
acknowledged every entry. Throughput counts every delivery handled (duplicates included). Every event lands in a
monthly partition of \`usage_events\` and in the hourly rollups in the same statement; afterwards raw rows and
rollups are checked against the events sent (count, tokens, picodollars). Each event carries a client
request id (1,000 distinct, shared by many events), stored with its index beside 64-bit token counts. Medians of ${runs} runs.

${table}

${verdict}`,
);
