import { readdirSync, readFileSync } from "node:fs";
import { cpus } from "node:os";

/** CPU ticks of the whole machine: busy (not idle, not iowait) and total, from /proc/stat. */
function machineTicks(): { busy: number; total: number } {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "")
    .trim()
    .split(/\s+/)
    .slice(1, 9)
    .map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  return { busy: total - (fields[3] ?? 0) - (fields[4] ?? 0), total };
}

/** CPU ticks used so far by a process (utime + stime); 0 once it is gone. */
function processTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
}

/** Every redis-server on the machine: the bench's work runs through them (the shared one included). */
export function redisPids(): number[] {
  return readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/comm`, "utf8").trim() === "redis-server";
      } catch {
        return false;
      }
    })
    .map(Number);
}

export interface CpuSnapshot {
  machine: { busy: number; total: number };
  own: number;
}

export function cpuSnapshot(pids: readonly number[]): CpuSnapshot {
  return { machine: machineTicks(), own: pids.reduce((n, pid) => n + processTicks(pid), 0) };
}

/** Cores' worth of CPU that processes other than `pids` used between two snapshots. */
export function foreignCores(before: CpuSnapshot, after: CpuSnapshot): number {
  const total = after.machine.total - before.machine.total;
  const foreign = after.machine.busy - before.machine.busy - (after.own - before.own);
  return (Math.max(0, foreign) / Math.max(1, total)) * cpus().length;
}

/** Cores' worth of CPU the whole machine used over one second. */
export async function busyCores(): Promise<number> {
  const before = machineTicks();
  await new Promise((r) => setTimeout(r, 1_000));
  const after = machineTicks();
  return ((after.busy - before.busy) / Math.max(1, after.total - before.total)) * cpus().length;
}

/**
 * Waits (at most `maxMs`) until the shared machine is nearly idle, the system under test idling
 * included; returns the busy cores of the last second.
 */
export async function waitQuiet(maxMs: number, quiet: number): Promise<number> {
  const deadline = Date.now() + maxMs;
  for (;;) {
    const busy = await busyCores();
    if (busy < quiet || Date.now() >= deadline) {
      return busy;
    }
  }
}
