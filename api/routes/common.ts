import { z } from "@hono/zod-openapi";
import { ValidationError } from "../../lib/index.ts";

export const Problem = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    code: z.string(),
    request_id: z.string(),
    errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  })
  .openapi("Problem");

const problem = (description: string) => ({
  description,
  content: { "application/problem+json": { schema: Problem } },
});

/** Error responses every authenticated management route can give. */
export const errorResponses = {
  400: problem("The request is malformed or fails validation; `errors` lists each field"),
  401: problem("Missing, malformed, expired or untrusted token"),
  403: problem("The token lacks the scope this route needs"),
  404: problem("No such object, or it belongs to another tenant"),
} as const;

export const conflictResponse = { 409: problem("The object already exists") } as const;

export const bearerSecurity = [{ bearer: [] }];

/** Money crosses the API as decimal USD and lives as integer micro-dollars. */
export const UsdAmount = z
  .number()
  .nonnegative()
  .max(1e12)
  .refine((v) => Math.abs(Math.round(v * 1e6) - v * 1e6) < 1e-6, "at most 6 decimal places");

export function usdToMicros(usd: number): bigint {
  return BigInt(Math.round(usd * 1e6));
}

export function microsToUsd(micros: bigint | number): number {
  return Number(micros) / 1e6;
}

/** An opaque page cursor: the sort key (a time and an id) of the last row of the previous page. */
export function encodeCursor(at: Date, id: string): string {
  return Buffer.from(`${at.toISOString()}|${id}`).toString("base64url");
}

/** The sort key a cursor from `encodeCursor` holds; a 400 naming `cursor` for anything else. */
export function decodeCursor(cursor: string): { at: Date; id: string } {
  const [iso, id] = Buffer.from(cursor, "base64url").toString("utf8").split("|");
  const at = new Date(iso ?? "");
  if (!id || Number.isNaN(at.getTime())) {
    throw new ValidationError("the query is invalid: cursor is not one this API gave", [
      { path: "cursor", message: "not a cursor from next_cursor" },
    ]);
  }
  return { at, id };
}

/**
 * One page of a list read with one row more than `limit` (that row only says a next page exists):
 * the page, and the cursor after its last row (null on the last page).
 */
export function pageOf<T>(
  rows: readonly T[],
  limit: number,
  sortKey: (row: T) => { at: Date; id: string },
): { page: T[]; nextCursor: string | null } {
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  const key = rows.length > limit && last !== undefined ? sortKey(last) : null;
  return { page, nextCursor: key && encodeCursor(key.at, key.id) };
}
