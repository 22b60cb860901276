import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { connect, createServer } from "node:net";

/** True if something accepts TCP connections on host:port within `timeoutMs`. */
export function isListening(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

async function waitListening(host: string, port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await isListening(host, port)) {
      return true;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return false;
}

const isLocal = (host: string) => ["127.0.0.1", "localhost", "::1"].includes(host);
const hasCommand = (cmd: string) => spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;

function aptInstall(packages: string[], log: (line: string) => void): boolean {
  if (!hasCommand("apt-get") || process.getuid?.() !== 0) {
    return false;
  }
  log(`installing ${packages.join(", ")} with apt-get...`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  spawnSync("apt-get", ["update", "-qq"], { stdio: "ignore", env });
  return spawnSync("apt-get", ["install", "-y", "-qq", ...packages], { stdio: "ignore", env }).status === 0;
}

function startPostgres(log: (line: string) => void): void {
  if (!existsSync("/etc/postgresql") && !aptInstall(["postgresql"], log)) {
    throw new Error(
      "PostgreSQL is not installed and could not be installed here: install PostgreSQL 15+ or set DATABASE_URL",
    );
  }
  for (const version of readdirSync("/etc/postgresql")) {
    log(`starting PostgreSQL ${version}...`);
    spawnSync("pg_ctlcluster", ["--skip-systemctl-redirect", version, "main", "start"], { stdio: "ignore" });
  }
}

function startRedis(log: (line: string) => void): void {
  if (!hasCommand("redis-server") && !aptInstall(["redis-server"], log)) {
    throw new Error(
      "Redis is not installed and could not be installed here: install Redis 7 or set REDIS_URL",
    );
  }
  log("starting Redis...");
  execFileSync(
    "redis-server",
    ["--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379", "--save", "", "--appendonly", "no"],
    {
      stdio: "ignore",
    },
  );
}

/**
 * Makes sure the Postgres and Redis that `databaseUrl` and `redisUrl` name are up: local ones are
 * started (and installed from Debian's packages when absent); remote ones are only checked.
 */
export async function ensureServices(
  urls: { databaseUrl: string; redisUrl: string },
  log: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
): Promise<void> {
  const pg = new URL(urls.databaseUrl);
  const pgHost = pg.hostname || "127.0.0.1";
  const pgPort = Number(pg.port || 5432);
  if (!(await isListening(pgHost, pgPort))) {
    if (!isLocal(pgHost)) {
      throw new Error(`PostgreSQL at ${pgHost}:${pgPort} is not reachable`);
    }
    startPostgres(log);
    if (!(await waitListening(pgHost, pgPort, 20_000))) {
      throw new Error(`PostgreSQL did not come up on ${pgHost}:${pgPort}`);
    }
  }
  const redis = new URL(urls.redisUrl);
  const redisHost = redis.hostname || "127.0.0.1";
  const redisPort = Number(redis.port || 6379);
  if (!(await isListening(redisHost, redisPort))) {
    if (!isLocal(redisHost)) {
      throw new Error(`Redis at ${redisHost}:${redisPort} is not reachable`);
    }
    startRedis(log);
    if (!(await waitListening(redisHost, redisPort, 10_000))) {
      throw new Error(`Redis did not come up on ${redisHost}:${redisPort}`);
    }
  }
}

export interface RunningRedis {
  url: string;
  port: number;
  /** Stops it as an operator would (SIGTERM: Redis flushes its AOF and exits). */
  close(): Promise<void>;
  /** Kills it -9, as a crash or an OOM kill would. */
  kill(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (asked of the OS, then released for the caller to bind). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/**
 * A Redis server of our own, for the usage stream: with `durable` it appends every write to its AOF
 * in `dir` and fsyncs before it answers (appendonly yes, appendfsync always), so an event it
 * acknowledged survives a crash of the server; without, it keeps nothing (as the machine's Redis).
 */
export async function startRedisServer(options: {
  dir: string;
  port?: number;
  durable: boolean;
}): Promise<RunningRedis> {
  if (!hasCommand("redis-server") && !aptInstall(["redis-server"], () => {})) {
    throw new Error("redis-server is not installed and could not be installed here");
  }
  mkdirSync(options.dir, { recursive: true });
  const port = options.port ?? (await freePort());
  const persistence = options.durable
    ? ["--appendonly", "yes", "--appendfsync", "always"]
    : ["--appendonly", "no"];
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--dir", options.dir, "--save", "", ...persistence],
    { stdio: "ignore", detached: false },
  );
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  if (!(await waitListening("127.0.0.1", port, 10_000))) {
    child.kill("SIGKILL");
    throw new Error(`redis-server did not come up on port ${port}`);
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    close: async () => {
      child.kill("SIGTERM");
      await exited;
    },
    kill: async () => {
      child.kill("SIGKILL");
      await exited;
    },
  };
}
