import { drizzle } from "drizzle-orm/postgres-js";
import postgres from "postgres";
import * as schema from "./schema/index.ts";

export type Database = ReturnType<typeof createDbHandle>["db"];
/** A database or an open transaction: every query function accepts either. */
export type Executor = Database | Parameters<Parameters<Database["transaction"]>[0]>[0];

export interface DbHandle {
  db: Database;
  ping: () => Promise<void>;
  close: () => Promise<void>;
}

/**
 * Every connection runs in UTC, whatever the server's or database's default: hourly buckets, monthly
 * partitions and `::date` casts must not move with a session time zone (a half-hour zone splits hours).
 */
export const SESSION_PARAMETERS = { TimeZone: "UTC" } as const;

export function createDbHandle(config: { url: string; poolSize: number }) {
  const sql = postgres(config.url, {
    max: config.poolSize,
    onnotice: () => {},
    connection: SESSION_PARAMETERS,
    connect_timeout: 5,
    idle_timeout: 30,
  });
  const db = drizzle(sql, { schema, casing: "snake_case" });
  return {
    db,
    ping: async () => {
      await sql`select 1`;
    },
    close: async () => {
      await sql.end({ timeout: 5 });
    },
  };
}
