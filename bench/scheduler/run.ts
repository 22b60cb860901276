import { readFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { parseArgs } from "node:util";
import {
  createBeladyPolicy,
  createPolicy,
  createStaticOracle,
  type FleetState,
  type Policy,
} from "../../scheduler/policy/index.ts";
import { type Cell, type Machine, type Matrix, renderReport, type ScaleRow, writeSection } from "./report.ts";
import { makeFleet, percentile, type SimResult, simulate } from "./simulate.ts";
import { localityTrace, type Trace, zipfTrace } from "./traces.ts";

/**
 * Replays synthetic demand through the placement policies (the same code the scheduler runs)
 * against the bench's fleet model, prints the figures and writes them to BENCHMARKS.md.
 *   node bench/scheduler/run.ts            full run (~8 min on 2 cores)
 *   node bench/scheduler/run.ts --quick    one seed, short traces, nothing written
 */

export const POLICIES = ["lru", "gdsf", "static", "belady"] as const;
export type PolicyName = (typeof POLICIES)[number];
export const FLEETS = [
  [4, 8],
  [4, 32],
  [8, 8],
  [8, 32],
] as const;

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    seeds: { type: "string" },
    length: { type: "string" },
    "no-write": { type: "boolean", default: false },
  },
});
const quick = values.quick ?? false;
const seeds = Number(values.seeds ?? (quick ? 1 : 3));
const length = Number(values.length ?? (quick ? 40_000 : 200_000));
const scaleLength = quick ? 40_000 : 200_000;
/** Plan runs on a timer in the scheduler; here every this many requests. */
const PLAN_EVERY = 500;
const warmup = Math.floor(length / 10);

interface TraceSpec {
  key: string;
  iid: boolean;
  make: (seed: number) => Trace;
}

const traceSpecs: TraceSpec[] = [];
for (const adapters of [1000, 10_000]) {
  for (const alpha of [0.8, 1.0, 1.2]) {
    traceSpecs.push({
      key: `zipf α=${alpha.toFixed(1)}, ${adapters / 1000}k adapters`,
      iid: true,
      make: (seed) => zipfTrace(adapters, alpha, length, seed * 7919 + adapters + alpha * 10),
    });
  }
}
for (const adapters of [1000, 10_000]) {
  traceSpecs.push({
    key: `locality + bursts, ${adapters / 1000}k adapters`,
    iid: false,
    make: (seed) => localityTrace(adapters, length, seed * 7919 + adapters + 1),
  });
}

function build(name: PolicyName, fleet: FleetState, trace: Trace): Policy {
  if (name === "static") {
    return createStaticOracle(fleet, trace.popularity);
  }
  const policy = name === "belady" ? createBeladyPolicy(trace.requests) : createPolicy(name);
  policy.sync(fleet);
  return policy;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

function summarize(runs: SimResult[]): Cell {
  return {
    hitRate: median(runs.map((r) => (100 * r.hits) / r.requests)),
    loadsPer1k: median(runs.map((r) => (1000 * r.loads) / r.requests)),
    evictionsPer1k: median(runs.map((r) => (1000 * r.evictions) / r.requests)),
    refusals: median(runs.map((r) => r.refusals)),
    p99Us: median(runs.map((r) => percentile(r.decisionNs, 99) / 1000)),
  };
}

function machine(): Machine {
  let cpu = "unknown";
  try {
    const info = readFileSync("/proc/cpuinfo", "utf8");
    cpu = /model name\s*:\s*(.+)/.exec(info)?.[1]?.trim() ?? cpu;
  } catch {
    // not Linux: keep "unknown"
  }
  return {
    nproc: availableParallelism(),
    cpu,
    node: process.version,
    date: new Date().toISOString().slice(0, 10),
    load: loadavg()[0] ?? 0,
  };
}

const host = machine();
const started = Date.now();
const matrix: Matrix = { length, warmup, seeds, planEvery: PLAN_EVERY, rows: [] };
for (const spec of traceSpecs) {
  const traces = Array.from({ length: seeds }, (_, s) => spec.make(s + 1));
  for (const [replicas, slots] of FLEETS) {
    const cells = {} as Record<PolicyName, Cell>;
    for (const name of POLICIES) {
      const runs = traces.map((trace) =>
        simulate(build(name, makeFleet(trace, replicas, slots), trace), trace, {
          planEvery: PLAN_EVERY,
          warmup,
        }),
      );
      cells[name] = summarize(runs);
    }
    matrix.rows.push({ trace: spec.key, iid: spec.iid, replicas, slots, cells });
    const c = cells;
    console.log(
      `${spec.key.padEnd(34)} ${`${replicas}×${slots}`.padEnd(5)} ` +
        POLICIES.map((n) => `${n} ${c[n].hitRate.toFixed(1)}% ${c[n].loadsPer1k.toFixed(0)}/1k`).join(" | "),
    );
  }
}

// Decision time at the scale the scheduler is designed for: 10k adapters on 64 replicas.
const scale: ScaleRow[] = [];
for (const make of [
  (seed: number) => zipfTrace(10_000, 1.0, scaleLength, seed),
  (seed: number) => localityTrace(10_000, scaleLength, seed),
]) {
  const trace = make(4242);
  for (const name of ["lru", "gdsf"] as const) {
    const policy = build(name, makeFleet(trace, 64, 32), trace);
    const run = simulate(policy, trace, { planEvery: PLAN_EVERY, warmup: Math.floor(scaleLength / 10) });
    const counted = run.decisionNs.subarray(Math.floor(scaleLength / 10));
    const us = (p: number) => percentile(counted, p) / 1000;
    scale.push({
      trace: trace.name,
      policy: name,
      hitRate: (100 * run.hits) / run.requests,
      p50Us: us(50),
      p99Us: us(99),
      p999Us: us(99.9),
      maxUs: us(100),
      over1ms: counted.filter((ns) => ns > 1e6).length,
      decisions: counted.length,
      planP99Ms: percentile(run.planNs, 99) / 1e6,
    });
    console.log(
      `scale 64×32 ${trace.name} ${name}: p99 ${us(99).toFixed(1)} µs, max ${us(100).toFixed(0)} µs`,
    );
  }
}

const report = renderReport(matrix, scale, scaleLength, host, Math.round((Date.now() - started) / 1000));
console.log(`\n${report}`);
if (!quick && !values["no-write"]) {
  writeSection(report);
  console.log("written to BENCHMARKS.md");
}
