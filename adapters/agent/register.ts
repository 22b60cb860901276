import type { AgentRegistration, Logger } from "../../lib/index.ts";

export interface RegistrationOptions {
  logger: Logger;
  /** Stops retrying (the agent is shutting down). */
  signal: AbortSignal;
  /** First retry delay; doubles up to maxDelayMs. */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Per-attempt HTTP timeout. */
  timeoutMs?: number;
}

export type RegistrationResult = "registered" | "already-registered" | "aborted";

/**
 * Registers this agent's replica with the API (`POST /admin/replicas`), retrying until it succeeds:
 * the API may start after the pod. Idempotent: 409 means a replica at that URL is already known.
 * A pod that restarts keeps its stable URL (StatefulSet), so its placements stay valid.
 */
export async function registerReplica(
  registration: AgentRegistration,
  options: RegistrationOptions,
): Promise<RegistrationResult> {
  const { logger, signal } = options;
  const maxDelay = options.maxDelayMs ?? 30_000;
  let delay = options.initialDelayMs ?? 500;
  const body = JSON.stringify({
    url: registration.replicaUrl,
    engine: registration.engine ?? "vllm",
    agent_url: registration.agentUrl,
    base_model: registration.baseModel,
    max_loras: registration.maxLoras,
    max_cpu_loras: registration.maxCpuLoras,
    max_lora_rank: registration.maxLoraRank,
  });
  for (let attempt = 1; !signal.aborted; attempt++) {
    let outcome: string;
    try {
      const res = await fetch(`${registration.apiUrl}/admin/replicas`, {
        method: "POST",
        headers: { authorization: `Bearer ${registration.token}`, "content-type": "application/json" },
        body,
        signal: AbortSignal.any([signal, AbortSignal.timeout(options.timeoutMs ?? 10_000)]),
      });
      const text = await res.text();
      if (res.status === 201) {
        const id = (JSON.parse(text) as { id?: string }).id;
        logger.info({ replica_id: id, replica: registration.replicaUrl }, "replica registered with the API");
        return "registered";
      }
      if (res.status === 409) {
        logger.info({ replica: registration.replicaUrl }, "replica already registered with the API");
        return "already-registered";
      }
      outcome = `HTTP ${res.status}: ${text.slice(0, 300)}`;
    } catch (error) {
      if (signal.aborted) {
        break;
      }
      outcome = (error as Error).message;
    }
    logger.warn(
      { attempt, api: registration.apiUrl, detail: outcome, retry_in_ms: delay },
      "replica registration failed; retrying",
    );
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, delay);
      function done() {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      }
      signal.addEventListener("abort", done, { once: true });
    });
    delay = Math.min(maxDelay, delay * 2);
  }
  return "aborted";
}
