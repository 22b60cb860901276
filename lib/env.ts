import { existsSync } from "node:fs";
import { isAbsolute } from "node:path";
import { z } from "zod";

const port = z.coerce.number().int().min(0).max(65535);
const bool = z.enum(["true", "false", "1", "0"]).transform((v) => v === "true" || v === "1");
const optionalUrl = z.preprocess((v) => (v === "" ? undefined : v), z.url().optional());
const optionalString = z.preprocess((v) => (v === "" ? undefined : v), z.string().optional());

/** Every variable loraplane reads, in one place. README's configuration table mirrors it. */
export const EnvSchema = z.object({
  NODE_ENV: z.enum(["development", "test", "production"]).default("development"),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  HOST: z.string().min(1).default("127.0.0.1"),
  PORT: port.default(8080),
  PUBLIC_URL: optionalUrl,
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL")
    .default("postgres://postgres@127.0.0.1:5432/loraplane"),
  DATABASE_POOL_SIZE: z.coerce.number().int().min(1).max(200).default(10),
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, "must be a redis:// URL")
    .default("redis://127.0.0.1:6379"),
  REDIS_PREFIX: z
    .string()
    .regex(/^[a-z0-9:_-]*$/, "lowercase letters, digits, ':', '_' and '-' only")
    .default("lp:"),
  USAGE_REDIS_URL: z.preprocess(
    (v) => (v === "" ? undefined : v),
    z
      .string()
      .regex(/^rediss?:\/\//, "must be a redis:// URL")
      .optional(),
  ),
  USAGE_DURABILITY: z.enum(["auto", "aof", "replicas", "postgres"]).default("auto"),
  USAGE_WAIT_REPLICAS: z.coerce.number().int().min(1).max(10).default(1),
  USAGE_WAIT_TIMEOUT_MS: z.coerce.number().int().min(1).max(10_000).default(100),
  S3_ENDPOINT: optionalUrl,
  S3_REGION: z.string().min(1).default("us-east-1"),
  S3_BUCKET: z
    .string()
    .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, "must be a valid S3 bucket name")
    .default("loraplane-adapters"),
  S3_ACCESS_KEY_ID: optionalString,
  S3_SECRET_ACCESS_KEY: optionalString,
  S3_FORCE_PATH_STYLE: bool.default(true),
  KEY_ENCRYPTION_KEY: z
    .string({ error: "is required: 32 random bytes, base64 (openssl rand -base64 32)" })
    .refine((v) => Buffer.from(v, "base64").length === 32, "must be 32 bytes encoded as base64"),
  JWT_ISSUER: z.string().min(1).default("loraplane"),
  TOKEN_DEFAULT_TTL_SECONDS: z.coerce.number().int().min(5).default(3600),
  TOKEN_MAX_TTL_SECONDS: z.coerce
    .number()
    .int()
    .min(5)
    .default(90 * 24 * 3600),
  EXTERNAL_JWT_ISSUER: optionalString,
  EXTERNAL_JWT_AUDIENCE: optionalString,
  EXTERNAL_JWT_JWKS_URL: optionalUrl,
  EXTERNAL_JWT_TENANT_CLAIM: z.string().min(1).default("tenant_id"),
  EXTERNAL_JWT_SCOPE_CLAIM: z.string().min(1).default("scope"),
  EXTERNAL_JWT_OPERATORS: bool.default(false),
  SHUTDOWN_TIMEOUT_MS: z.coerce.number().int().min(100).default(10_000),
  GATEWAY_COLD_START_TIMEOUT_MS: z.coerce.number().int().min(100).default(60_000),
  GATEWAY_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(10).default(2),
  GATEWAY_HEADERS_TIMEOUT_MS: z.coerce.number().int().min(100).default(300_000),
  GATEWAY_BODY_TIMEOUT_MS: z.coerce.number().int().min(100).default(120_000),
  TENANT_DEFAULT_MAX_CONCURRENT_REQUESTS: z.coerce.number().int().min(1).max(1_000_000).default(256),
  TENANT_DEFAULT_COLD_LOADS_PER_MINUTE: z.coerce.number().int().min(1).max(1_000_000).default(60),
  UPLOAD_MAX_CONCURRENT_PER_TENANT: z.coerce.number().int().min(1).max(100).default(8),
  HTTP_IDLE_TIMEOUT_MS: z.coerce.number().int().min(100).default(60_000),
  GATEWAY_MAX_BODY_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .default(8 * 1024 * 1024),
  SCHEDULER_POLICY: z.enum(["gdsf", "lru"]).default("gdsf"),
  SCHEDULER_LEASE_TTL_MS: z.coerce.number().int().min(300).default(15_000),
  SCHEDULER_RECONCILE_MS: z.coerce.number().int().min(50).default(5_000),
  FLEET_POLL_INTERVAL_MS: z.coerce.number().int().min(50).default(2_000),
  FLEET_DOWN_AFTER_MS: z.coerce.number().int().min(100).default(10_000),
  AGENT_TOKEN: z.preprocess(
    (v) => (v === "" ? undefined : v),
    z.string().min(16, "must be at least 16 characters").optional(),
  ),
  VLLM_API_KEY: optionalString,
  BUDGET_RESERVATION_LEASE_MS: z.coerce.number().int().min(200).max(3_600_000).default(60_000),
  METERING_BATCH_SIZE: z.coerce.number().int().min(1).max(10_000).default(1_000),
  METERING_CLAIM_IDLE_MS: z.coerce.number().int().min(50).default(30_000),
  USAGE_RETENTION_MONTHS: z.coerce.number().int().min(1).max(120).default(13),
  METERING_METRICS_PORT: port.default(9464),
  API_METRICS_PORT: port.default(9466),
  SCHEDULER_HEALTH_PORT: port.default(9465),
  OTEL_EXPORTER_OTLP_ENDPOINT: optionalUrl,
  OTEL_EXPORTER_OTLP_HEADERS: optionalString,
  OTEL_SERVICE_NAME: optionalString,
  OTEL_TRACES_SAMPLER_ARG: z.coerce.number().min(0).max(1).default(1),
});

export type Env = z.infer<typeof EnvSchema>;

export interface Config {
  nodeEnv: Env["NODE_ENV"];
  log: { level: Env["LOG_LEVEL"] };
  /**
   * `metricsPort`: the API's own port for /metrics alone (0: off), on `host`, never behind the ingress.
   * `idleTimeoutMs`: a request whose body stops arriving for this long is cut (a slow upload that keeps
   * sending is not: there is no limit on a request's total time).
   */
  http: {
    host: string;
    port: number;
    publicUrl: string | undefined;
    metricsPort: number;
    idleTimeoutMs: number;
  };
  uploads: { maxConcurrentPerTenant: number };
  /** What a tenant whose limit is null gets. */
  tenantDefaults: { maxConcurrentRequests: number; coldLoadsPerMinute: number };
  db: { url: string; poolSize: number };
  redis: { url: string; prefix: string };
  s3: {
    endpoint: string | undefined;
    region: string;
    bucket: string;
    accessKeyId: string | undefined;
    secretAccessKey: string | undefined;
    forcePathStyle: boolean;
  };
  auth: {
    issuer: string;
    keyEncryptionKey: Buffer;
    defaultTtlSeconds: number;
    maxTtlSeconds: number;
    external: ExternalIssuerConfig | undefined;
  };
  shutdownTimeoutMs: number;
  gateway: {
    coldStartTimeoutMs: number;
    maxAttempts: number;
    headersTimeoutMs: number;
    bodyTimeoutMs: number;
    maxBodyBytes: number;
  };
  scheduler: {
    policy: "gdsf" | "lru";
    leaseTtlMs: number;
    reconcileEveryMs: number;
    pollIntervalMs: number;
    downAfterMs: number;
    /** Port of the scheduler's /healthz (0: off). */
    healthPort: number;
  };
  /** Bearer secret for the replica agents; the scheduler needs it to load adapters. */
  agentToken: string | undefined;
  /** vLLM's --api-key, when the replicas are started with one. */
  replicaApiKey: string | undefined;
  metering: { batchSize: number; claimIdleMs: number; retentionMonths: number; metricsPort: number };
  usage: UsageConfig;
  /** A budget reservation lives this long past its process's last renewal (renewed every third of it). */
  budgets: { reservationLeaseMs: number };
  tracing: TracingConfig;
}

/**
 * Where usage events go between the gateway and Postgres, and what makes one durable before the
 * response ends. `durability`: `auto` uses the stream when its Redis fsyncs every write (AOF,
 * appendfsync always; checked on every connect) and writes events straight to Postgres otherwise;
 * `aof` trusts the Redis to (a managed one that hides CONFIG); `replicas` waits for `waitReplicas`
 * replicas to have each write (WAIT), writing to Postgres too when they do not in `waitTimeoutMs`;
 * `postgres` always writes to Postgres.
 */
export interface UsageConfig {
  redis: { url: string; prefix: string };
  durability: "auto" | "aof" | "replicas" | "postgres";
  waitReplicas: number;
  waitTimeoutMs: number;
}

/** OpenTelemetry tracing: off unless an OTLP endpoint is set (then spans go to `<endpoint>/v1/traces`). */
export interface TracingConfig {
  endpoint: string | undefined;
  /** `key=value,key2=value2`, as OTEL_EXPORTER_OTLP_HEADERS. */
  headers: Record<string, string>;
  serviceName: string | undefined;
  /** Fraction of requests traced; a client's sampled traceparent does not raise it. */
  sampleRatio: number;
}

function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

function parseOtlpHeaders(raw: string | undefined): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const pair of (raw ?? "").split(",")) {
    const eq = pair.indexOf("=");
    if (eq > 0) {
      headers[safeDecode(pair.slice(0, eq).trim())] = safeDecode(pair.slice(eq + 1).trim());
    }
  }
  return headers;
}

export interface ExternalIssuerConfig {
  issuer: string;
  audience: string;
  jwksUrl: string;
  tenantClaim: string;
  scopeClaim: string;
  /** Its tokens without a tenant are operators (with the scopes they carry); off: they are refused. */
  operators: boolean;
}

export class ConfigError extends Error {
  readonly issues: { variable: string; message: string }[];
  constructor(issues: { variable: string; message: string }[]) {
    super(`Invalid configuration:\n${issues.map((i) => `  ${i.variable}: ${i.message}`).join("\n")}`);
    this.name = "ConfigError";
    this.issues = issues;
  }
}

/** Parses with a schema; every failing variable becomes one entry of a ConfigError. */
function parseOrThrow<S extends z.ZodType>(
  schema: S,
  source: Record<string, string | undefined>,
): z.infer<S> {
  const result = schema.safeParse(source);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((issue) => ({
        variable: String(issue.path[0] ?? "?"),
        message: issue.message,
      })),
    );
  }
  return result.data;
}

type S3Env = Pick<
  Env,
  | "S3_ENDPOINT"
  | "S3_REGION"
  | "S3_BUCKET"
  | "S3_ACCESS_KEY_ID"
  | "S3_SECRET_ACCESS_KEY"
  | "S3_FORCE_PATH_STYLE"
>;

/** The S3 slice every process shares; static credentials come as a pair or not at all. */
function s3Config(env: S3Env): Config["s3"] {
  if ((env.S3_ACCESS_KEY_ID === undefined) !== (env.S3_SECRET_ACCESS_KEY === undefined)) {
    throw new ConfigError([
      {
        variable: "S3_ACCESS_KEY_ID",
        message: "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together",
      },
    ]);
  }
  return {
    endpoint: env.S3_ENDPOINT,
    region: env.S3_REGION,
    bucket: env.S3_BUCKET,
    accessKeyId: env.S3_ACCESS_KEY_ID,
    secretAccessKey: env.S3_SECRET_ACCESS_KEY,
    forcePathStyle: env.S3_FORCE_PATH_STYLE,
  };
}

/** Parses a variable map into Config; throws ConfigError naming every bad variable. */
export function parseConfig(source: Record<string, string | undefined>): Config {
  const env = parseOrThrow(EnvSchema, source);
  const externalParts = [env.EXTERNAL_JWT_ISSUER, env.EXTERNAL_JWT_AUDIENCE, env.EXTERNAL_JWT_JWKS_URL];
  const externalSet = externalParts.filter((v) => v !== undefined).length;
  if (env.EXTERNAL_JWT_ISSUER !== undefined && env.EXTERNAL_JWT_ISSUER === env.JWT_ISSUER) {
    throw new ConfigError([
      {
        variable: "EXTERNAL_JWT_ISSUER",
        message: "must differ from JWT_ISSUER: tokens are told apart by their issuer",
      },
    ]);
  }
  if (externalSet !== 0 && externalSet !== 3) {
    throw new ConfigError([
      {
        variable: "EXTERNAL_JWT_ISSUER",
        message: "EXTERNAL_JWT_ISSUER, EXTERNAL_JWT_AUDIENCE and EXTERNAL_JWT_JWKS_URL must be set together",
      },
    ]);
  }
  return {
    nodeEnv: env.NODE_ENV,
    log: { level: env.LOG_LEVEL },
    http: {
      host: env.HOST,
      port: env.PORT,
      publicUrl: env.PUBLIC_URL,
      metricsPort: env.API_METRICS_PORT,
      idleTimeoutMs: env.HTTP_IDLE_TIMEOUT_MS,
    },
    uploads: { maxConcurrentPerTenant: env.UPLOAD_MAX_CONCURRENT_PER_TENANT },
    tenantDefaults: {
      maxConcurrentRequests: env.TENANT_DEFAULT_MAX_CONCURRENT_REQUESTS,
      coldLoadsPerMinute: env.TENANT_DEFAULT_COLD_LOADS_PER_MINUTE,
    },
    db: { url: env.DATABASE_URL, poolSize: env.DATABASE_POOL_SIZE },
    redis: { url: env.REDIS_URL, prefix: env.REDIS_PREFIX },
    s3: s3Config(env),
    auth: {
      issuer: env.JWT_ISSUER,
      keyEncryptionKey: Buffer.from(env.KEY_ENCRYPTION_KEY, "base64"),
      defaultTtlSeconds: env.TOKEN_DEFAULT_TTL_SECONDS,
      maxTtlSeconds: env.TOKEN_MAX_TTL_SECONDS,
      external:
        env.EXTERNAL_JWT_ISSUER && env.EXTERNAL_JWT_AUDIENCE && env.EXTERNAL_JWT_JWKS_URL
          ? {
              issuer: env.EXTERNAL_JWT_ISSUER,
              audience: env.EXTERNAL_JWT_AUDIENCE,
              jwksUrl: env.EXTERNAL_JWT_JWKS_URL,
              tenantClaim: env.EXTERNAL_JWT_TENANT_CLAIM,
              scopeClaim: env.EXTERNAL_JWT_SCOPE_CLAIM,
              operators: env.EXTERNAL_JWT_OPERATORS,
            }
          : undefined,
    },
    shutdownTimeoutMs: env.SHUTDOWN_TIMEOUT_MS,
    gateway: {
      coldStartTimeoutMs: env.GATEWAY_COLD_START_TIMEOUT_MS,
      maxAttempts: env.GATEWAY_MAX_ATTEMPTS,
      headersTimeoutMs: env.GATEWAY_HEADERS_TIMEOUT_MS,
      bodyTimeoutMs: env.GATEWAY_BODY_TIMEOUT_MS,
      maxBodyBytes: env.GATEWAY_MAX_BODY_BYTES,
    },
    scheduler: {
      policy: env.SCHEDULER_POLICY,
      leaseTtlMs: env.SCHEDULER_LEASE_TTL_MS,
      reconcileEveryMs: env.SCHEDULER_RECONCILE_MS,
      pollIntervalMs: env.FLEET_POLL_INTERVAL_MS,
      downAfterMs: env.FLEET_DOWN_AFTER_MS,
      healthPort: env.SCHEDULER_HEALTH_PORT,
    },
    agentToken: env.AGENT_TOKEN,
    replicaApiKey: env.VLLM_API_KEY,
    metering: {
      batchSize: env.METERING_BATCH_SIZE,
      claimIdleMs: env.METERING_CLAIM_IDLE_MS,
      retentionMonths: env.USAGE_RETENTION_MONTHS,
      metricsPort: env.METERING_METRICS_PORT,
    },
    usage: {
      redis: { url: env.USAGE_REDIS_URL ?? env.REDIS_URL, prefix: env.REDIS_PREFIX },
      durability: env.USAGE_DURABILITY,
      waitReplicas: env.USAGE_WAIT_REPLICAS,
      waitTimeoutMs: env.USAGE_WAIT_TIMEOUT_MS,
    },
    budgets: { reservationLeaseMs: env.BUDGET_RESERVATION_LEASE_MS },
    tracing: {
      endpoint: env.OTEL_EXPORTER_OTLP_ENDPOINT,
      headers: parseOtlpHeaders(env.OTEL_EXPORTER_OTLP_HEADERS),
      serviceName: env.OTEL_SERVICE_NAME,
      sampleRatio: env.OTEL_TRACES_SAMPLER_ARG,
    },
  };
}

/**
 * Entry points call this once. A local `.env` (written by the dev bootstrap) fills in what the
 * environment leaves unset; a bad or missing variable prints every problem and exits 1.
 */
export function loadConfig(envFile = ".env"): Config {
  return loadOrExit(parseConfig, envFile);
}

function loadOrExit<T>(parse: (source: Record<string, string | undefined>) => T, envFile: string): T {
  if (existsSync(envFile)) {
    process.loadEnvFile(envFile);
  }
  try {
    return parse(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
}

/** The replica agent (sidecar of one vLLM replica): its own variables plus the S3 settings above. */
export const AgentEnvSchema = EnvSchema.pick({
  LOG_LEVEL: true,
  S3_ENDPOINT: true,
  S3_REGION: true,
  S3_BUCKET: true,
  S3_ACCESS_KEY_ID: true,
  S3_SECRET_ACCESS_KEY: true,
  S3_FORCE_PATH_STYLE: true,
  SHUTDOWN_TIMEOUT_MS: true,
})
  .extend({
    AGENT_HOST: z.string().min(1).default("127.0.0.1"),
    AGENT_PORT: port.default(8091),
    AGENT_TOKEN: z
      .string({ error: "is required: the secret the scheduler sends as a bearer token (16+ characters)" })
      .min(16, "must be at least 16 characters"),
    AGENT_REPLICA_URL: z.url({ error: "is required: the replica's base URL, e.g. http://127.0.0.1:8000" }),
    /** Which engine serves at AGENT_REPLICA_URL: its protocol for loads, unloads and metrics. */
    AGENT_ENGINE: z.enum(["vllm", "sglang"]).default("vllm"),
    AGENT_REPLICA_API_KEY: optionalString,
    /** SGLang's --admin-api-key, when the replica has one: only it may load and unload adapters. */
    AGENT_REPLICA_ADMIN_API_KEY: optionalString,
    AGENT_CACHE_DIR: z
      .string({ error: "is required: an absolute directory on the disk the vLLM replica reads" })
      .refine((v) => isAbsolute(v), "must be an absolute path"),
    AGENT_DISK_BUDGET_BYTES: z.coerce
      .number({ error: "is required: bytes of adapter files the cache may hold" })
      .int()
      .min(1),
    AGENT_GC_INTERVAL_MS: z.coerce.number().int().min(10).default(5_000),
    AGENT_UNLOAD_GRACE_MS: z.coerce.number().int().min(0).max(86_400_000).default(60_000),
    AGENT_REGISTER_URL: optionalUrl,
    AGENT_REGISTER_TOKEN: optionalString,
    AGENT_PUBLIC_URL: optionalUrl,
    AGENT_REPLICA_PUBLIC_URL: optionalUrl,
    AGENT_BASE_MODEL: optionalString,
    AGENT_MAX_LORAS: z.coerce.number().int().min(1).max(1024).default(1),
    AGENT_MAX_CPU_LORAS: z.preprocess(
      (v) => (v === "" ? undefined : v),
      z.coerce.number().int().min(1).max(1024).optional(),
    ),
    AGENT_MAX_LORA_RANK: z.coerce.number().int().min(1).max(1024).default(16),
  })
  .refine(
    (e) =>
      e.AGENT_ENGINE !== "vllm" || [1, 8, 16, 32, 64, 128, 256, 320, 512].includes(e.AGENT_MAX_LORA_RANK),
    {
      message: "must be one of vLLM's LoRA ranks",
      path: ["AGENT_MAX_LORA_RANK"],
    },
  );

export type AgentEnv = z.infer<typeof AgentEnvSchema>;

export interface AgentConfig {
  log: { level: Env["LOG_LEVEL"] };
  http: { host: string; port: number };
  /** Shared secret every route but /healthz requires as `Authorization: Bearer <token>`. */
  token: string;
  replica: {
    url: string;
    /** Default vllm. */
    engine?: "vllm" | "sglang";
    apiKey: string | undefined;
    adminApiKey?: string | undefined;
  };
  /** `unloadGraceMs`: how long an unloaded (or unused) adapter's files stay before they may go. */
  cache: { dir: string; budgetBytes: number; gcIntervalMs: number; unloadGraceMs: number };
  s3: Config["s3"];
  shutdownTimeoutMs: number;
  /** Self-registration with the API at start (Kubernetes pods); absent when AGENT_REGISTER_URL is unset. */
  register?: AgentRegistration | undefined;
}

/** What the agent sends to `POST /admin/replicas` for its replica. */
export interface AgentRegistration {
  apiUrl: string;
  /** An operator token (scope `admin`). */
  token: string;
  replicaUrl: string;
  /** Default vllm. */
  engine?: "vllm" | "sglang";
  agentUrl: string;
  baseModel: string;
  maxLoras: number;
  maxCpuLoras: number;
  maxLoraRank: number;
}

/** Parses a variable map into AgentConfig; throws ConfigError naming every bad variable. */
export function parseAgentConfig(source: Record<string, string | undefined>): AgentConfig {
  const env = parseOrThrow(AgentEnvSchema, source);
  let register: AgentRegistration | undefined;
  if (env.AGENT_REGISTER_URL !== undefined) {
    const needed = {
      AGENT_REGISTER_TOKEN: env.AGENT_REGISTER_TOKEN,
      AGENT_PUBLIC_URL: env.AGENT_PUBLIC_URL,
      AGENT_BASE_MODEL: env.AGENT_BASE_MODEL,
    };
    const missing = Object.entries(needed).filter(([, v]) => v === undefined);
    if (missing.length > 0) {
      throw new ConfigError(
        missing.map(([variable]) => ({ variable, message: "is required when AGENT_REGISTER_URL is set" })),
      );
    }
    const maxCpuLoras = env.AGENT_MAX_CPU_LORAS ?? env.AGENT_MAX_LORAS;
    if (maxCpuLoras < env.AGENT_MAX_LORAS) {
      throw new ConfigError([
        { variable: "AGENT_MAX_CPU_LORAS", message: "vLLM requires it ≥ AGENT_MAX_LORAS" },
      ]);
    }
    register = {
      apiUrl: env.AGENT_REGISTER_URL.replace(/\/+$/, ""),
      token: needed.AGENT_REGISTER_TOKEN as string,
      replicaUrl: (env.AGENT_REPLICA_PUBLIC_URL ?? env.AGENT_REPLICA_URL).replace(/\/+$/, ""),
      engine: env.AGENT_ENGINE,
      agentUrl: (needed.AGENT_PUBLIC_URL as string).replace(/\/+$/, ""),
      baseModel: needed.AGENT_BASE_MODEL as string,
      maxLoras: env.AGENT_MAX_LORAS,
      maxCpuLoras,
      maxLoraRank: env.AGENT_MAX_LORA_RANK,
    };
  }
  return {
    log: { level: env.LOG_LEVEL },
    http: { host: env.AGENT_HOST, port: env.AGENT_PORT },
    token: env.AGENT_TOKEN,
    replica: {
      url: env.AGENT_REPLICA_URL,
      engine: env.AGENT_ENGINE,
      apiKey: env.AGENT_REPLICA_API_KEY,
      adminApiKey: env.AGENT_REPLICA_ADMIN_API_KEY,
    },
    cache: {
      dir: env.AGENT_CACHE_DIR,
      budgetBytes: env.AGENT_DISK_BUDGET_BYTES,
      gcIntervalMs: env.AGENT_GC_INTERVAL_MS,
      unloadGraceMs: env.AGENT_UNLOAD_GRACE_MS,
    },
    s3: s3Config(env),
    shutdownTimeoutMs: env.SHUTDOWN_TIMEOUT_MS,
    register,
  };
}

/** The agent's entry point calls this once; like loadConfig, a bad variable prints every problem and exits 1. */
export function loadAgentConfig(envFile = ".env"): AgentConfig {
  return loadOrExit(parseAgentConfig, envFile);
}
