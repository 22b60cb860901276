import { and, eq, lt, or, type SQL } from "drizzle-orm";
import type { PgColumn } from "drizzle-orm/pg-core";

/**
 * The rows after a page's last row `before`, in (time, id) descending order: older, or as old
 * with a smaller id. Undefined (no condition) for the first page.
 */
export function olderThan(
  at: PgColumn,
  id: PgColumn,
  before: { at: Date; id: string } | undefined,
): SQL | undefined {
  return before === undefined ? undefined : or(lt(at, before.at), and(eq(at, before.at), lt(id, before.id)));
}
