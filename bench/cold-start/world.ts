import { type ChildProcess, spawn } from "node:child_process";
import { appendFileSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";

export const ROOT = resolve(import.meta.dirname, "../..");

/** One pino line of a child process: `time` in epoch milliseconds, the rest as logged. */
export interface LogLine {
  proc: string;
  time: number;
  msg: string;
  level: number;
  fields: Record<string, unknown>;
}

interface LogWaiter {
  match: (line: LogLine) => boolean;
  resolve: (line: LogLine) => void;
}

/**
 * Every process's structured log, kept in memory: the phases are read from what the services log
 * (pino's `time` and the durations they measure themselves), never from clocks added for the bench.
 */
export class LogBook {
  readonly lines: LogLine[] = [];
  private waiters: LogWaiter[] = [];
  /** Where every raw line is also appended, as `<dir>/<proc>.log` (for digging into a slow phase). */
  private readonly keepDir: string | undefined;

  constructor(keepDir?: string) {
    this.keepDir = keepDir;
    if (keepDir) {
      mkdirSync(keepDir, { recursive: true });
    }
  }

  attach(proc: string, stream: Readable, echo: (text: string) => void): void {
    const reader = createInterface({ input: stream });
    reader.on("line", (text) => {
      if (this.keepDir) {
        appendFileSync(join(this.keepDir, `${proc}.log`), `${text}\n`);
      }
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(text) as Record<string, unknown>;
      } catch {
        // Plain text (the replica simulator's uvicorn-style lines): stamped on arrival.
        parsed = { time: Date.now(), msg: text, level: 30, plain: true };
      }
      const { time, msg, level, ...fields } = parsed;
      const line: LogLine = {
        proc,
        time: typeof time === "string" ? Date.parse(time) : Number(time),
        msg: String(msg ?? ""),
        level: Number(level ?? 30),
        fields,
      };
      // Warnings and errors of the system under test belong in the run's output.
      if (line.level >= 40) {
        echo(`[${proc}] ${text}`);
      }
      this.lines.push(line);
      const ready = this.waiters.filter((w) => w.match(line));
      this.waiters = this.waiters.filter((w) => !w.match(line));
      for (const w of ready) {
        w.resolve(line);
      }
    });
  }

  find(match: (line: LogLine) => boolean): LogLine | undefined {
    return this.lines.find(match);
  }

  /** The first line (logged already, or to come) that matches; rejects after `timeoutMs`. */
  waitFor(what: string, match: (line: LogLine) => boolean, timeoutMs: number): Promise<LogLine> {
    const found = this.find(match);
    if (found) {
      return Promise.resolve(found);
    }
    return new Promise((resolveLine, reject) => {
      const waiter: LogWaiter = {
        match,
        resolve: (line) => {
          clearTimeout(timer);
          resolveLine(line);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no log line "${what}" within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }
}

/** Child processes of one run: spawned from the repository's entry points, stopped together. */
export class Children {
  private readonly list: ChildProcess[] = [];
  private readonly logs: LogBook;
  private readonly cwd: string;
  private readonly echo: (text: string) => void;

  constructor(logs: LogBook, cwd: string, echo: (text: string) => void) {
    this.logs = logs;
    this.cwd = cwd;
    this.echo = echo;
    mkdirSync(cwd, { recursive: true });
  }

  /** `script` relative to the repository; its stdout goes to the log book under `proc`. */
  start(proc: string, script: string, args: string[], env: Record<string, string>): ChildProcess {
    // The scratch cwd keeps a developer's .env (which loadConfig reads) out of the measured processes.
    const child = spawn(process.execPath, [join(ROOT, script), ...args], {
      cwd: this.cwd,
      env: { PATH: process.env.PATH ?? "", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.list.push(child);
    if (child.stdout) {
      this.logs.attach(proc, child.stdout, this.echo);
    }
    child.stderr?.on("data", (d: Buffer) => this.echo(`[${proc} stderr] ${d.toString().trimEnd()}`));
    child.once("exit", (code, signal) => {
      if (code !== 0 && code !== null && signal === null) {
        this.echo(`[${proc}] exited with code ${code}`);
      }
    });
    return child;
  }

  pids(): number[] {
    return this.list.map((c) => c.pid ?? 0).filter((pid) => pid > 0);
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.list].reverse().map((child) => stopChild(child)));
    this.list.length = 0;
  }
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

/** The first stdout line of a child that prints its address and nothing else (the S3 server). */
export function firstLine(child: ChildProcess): Promise<string> {
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

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
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
