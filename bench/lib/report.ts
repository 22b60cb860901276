import { execSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

export function machineLine(): string {
  const cpu = cpus()[0]?.model.trim() ?? "unknown CPU";
  let kernel = "";
  try {
    kernel = execSync("uname -sr").toString().trim();
  } catch {
    // not fatal: the line is informational
  }
  return `${cpus().length} cores (${cpu}), ${Math.round(Number(execSync("free -b | awk '/Mem:/{print $2}'").toString()) / 2 ** 30)} GiB RAM, ${kernel}, Node ${process.version}`;
}

/** Replaces (or appends) the `## <title>` section of BENCHMARKS.md. */
export function writeBenchmarkSection(title: string, body: string, file = "BENCHMARKS.md"): void {
  const heading = `## ${title}`;
  const current = existsSync(file)
    ? readFileSync(file, "utf8")
    : "# Benchmarks\n\nEach section: the command, the date, the machine, the figures (medians of several runs).\n";
  const section = `${heading}\n\n${body.trim()}\n`;
  const start = current.indexOf(`${heading}\n`);
  if (start === -1) {
    writeFileSync(file, `${current.trimEnd()}\n\n${section}`);
    return;
  }
  const next = current.indexOf("\n## ", start + heading.length);
  writeFileSync(file, `${current.slice(0, start)}${section}${next === -1 ? "" : current.slice(next)}`);
}
