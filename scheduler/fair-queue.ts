/** A tenant's weight in fair queuing when it sets none; priorities run 1..100. */
export const DEFAULT_TENANT_PRIORITY = 10;
/** BullMQ's priorities run 1 (first) to 2^21; 0 (none) goes before all of them. */
const MAX_QUEUE_PRIORITY = 2 ** 21 - 1;

/**
 * A queue priority that orders waiting work fairly between tenants: a tenant's n-th waiting job
 * comes after every tenant's jobs with a smaller n / weight (weighted fair queuing by virtual start
 * time; BullMQ keeps equal priorities first in, first out). A tenant flooding the queue only pushes
 * its own work back.
 */
export function fairPriority(waitingOfTenant: number, priority: number | null): number {
  const weight = Math.max(1, Math.min(100, priority ?? DEFAULT_TENANT_PRIORITY));
  return Math.min(MAX_QUEUE_PRIORITY, 1 + Math.floor((waitingOfTenant * 100) / weight));
}
