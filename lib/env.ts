import { existsSync } from "node:fs";
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
  TOKEN_DEFAULT_TTL_SECONDS: z.coerce.number().int().min(60).default(3600),
  TOKEN_MAX_TTL_SECONDS: z.coerce
    .number()
    .int()
    .min(60)
    .default(90 * 24 * 3600),
  EXTERNAL_JWT_ISSUER: optionalString,
  EXTERNAL_JWT_AUDIENCE: optionalString,
  EXTERNAL_JWT_JWKS_URL: optionalUrl,
  EXTERNAL_JWT_TENANT_CLAIM: z.string().min(1).default("tenant_id"),
  EXTERNAL_JWT_SCOPE_CLAIM: z.string().min(1).default("scope"),
  SHUTDOWN_TIMEOUT_MS: z.coerce.number().int().min(100).default(10_000),
});

export type Env = z.infer<typeof EnvSchema>;

export interface Config {
  nodeEnv: Env["NODE_ENV"];
  log: { level: Env["LOG_LEVEL"] };
  http: { host: string; port: number; publicUrl: string | undefined };
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
}

export interface ExternalIssuerConfig {
  issuer: string;
  audience: string;
  jwksUrl: string;
  tenantClaim: string;
  scopeClaim: string;
}

export class ConfigError extends Error {
  readonly issues: { variable: string; message: string }[];
  constructor(issues: { variable: string; message: string }[]) {
    super(`Invalid configuration:\n${issues.map((i) => `  ${i.variable}: ${i.message}`).join("\n")}`);
    this.name = "ConfigError";
    this.issues = issues;
  }
}

/** Parses a variable map into Config; throws ConfigError naming every bad variable. */
export function parseConfig(source: Record<string, string | undefined>): Config {
  const result = EnvSchema.safeParse(source);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((issue) => ({
        variable: String(issue.path[0] ?? "?"),
        message: issue.message,
      })),
    );
  }
  const env = result.data;
  const externalParts = [env.EXTERNAL_JWT_ISSUER, env.EXTERNAL_JWT_AUDIENCE, env.EXTERNAL_JWT_JWKS_URL];
  const externalSet = externalParts.filter((v) => v !== undefined).length;
  if (externalSet !== 0 && externalSet !== 3) {
    throw new ConfigError([
      {
        variable: "EXTERNAL_JWT_ISSUER",
        message: "EXTERNAL_JWT_ISSUER, EXTERNAL_JWT_AUDIENCE and EXTERNAL_JWT_JWKS_URL must be set together",
      },
    ]);
  }
  if ((env.S3_ACCESS_KEY_ID === undefined) !== (env.S3_SECRET_ACCESS_KEY === undefined)) {
    throw new ConfigError([
      {
        variable: "S3_ACCESS_KEY_ID",
        message: "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together",
      },
    ]);
  }
  return {
    nodeEnv: env.NODE_ENV,
    log: { level: env.LOG_LEVEL },
    http: { host: env.HOST, port: env.PORT, publicUrl: env.PUBLIC_URL },
    db: { url: env.DATABASE_URL, poolSize: env.DATABASE_POOL_SIZE },
    redis: { url: env.REDIS_URL, prefix: env.REDIS_PREFIX },
    s3: {
      endpoint: env.S3_ENDPOINT,
      region: env.S3_REGION,
      bucket: env.S3_BUCKET,
      accessKeyId: env.S3_ACCESS_KEY_ID,
      secretAccessKey: env.S3_SECRET_ACCESS_KEY,
      forcePathStyle: env.S3_FORCE_PATH_STYLE,
    },
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
            }
          : undefined,
    },
    shutdownTimeoutMs: env.SHUTDOWN_TIMEOUT_MS,
  };
}

/**
 * Entry points call this once. A local `.env` (written by the dev bootstrap) fills in what the
 * environment leaves unset; a bad or missing variable prints every problem and exits 1.
 */
export function loadConfig(envFile = ".env"): Config {
  if (existsSync(envFile)) {
    process.loadEnvFile(envFile);
  }
  try {
    return parseConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
}
