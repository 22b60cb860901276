import { ensureServices } from "./services.ts";

// CI and operators: bring up the local Postgres and Redis the defaults point at.
await ensureServices({
  databaseUrl: process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres",
  redisUrl: process.env.REDIS_URL ?? "redis://127.0.0.1:6379",
});
process.stdout.write("postgres and redis are up\n");
