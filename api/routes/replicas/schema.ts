import { z } from "@hono/zod-openapi";
import {
  REPLICA_ENGINES,
  type ReplicaEngine,
  type ReplicaRow,
  replicaDisplayStatus,
} from "../../../db/index.ts";
import { VLLM_LORA_RANKS } from "../base-models/schema.ts";

const httpUrl = z
  .url({ protocol: /^https?$/, error: "must be an http(s) URL" })
  .max(500)
  .transform((u) => u.replace(/\/+$/, ""));
const slots = z.number().int().min(1).max(1024);

export const CreateReplicaBody = z
  .strictObject({
    url: httpUrl.openapi({ description: "The engine server's base URL (without /v1)" }),
    engine: z
      .enum(REPLICA_ENGINES)
      .default("vllm")
      .openapi({ description: "The engine serving at `url`: `vllm` (default) or `sglang`" }),
    agent_url: httpUrl.optional().openapi({ description: "The replica agent (sidecar) that loads adapters" }),
    base_model: z.string().min(1).max(128),
    max_loras: slots.openapi({
      description: "Adapters one batch can mix (GPU slots): vLLM --max-loras, SGLang --max-loras-per-batch",
    }),
    max_cpu_loras: slots.openapi({
      description:
        "Adapters the engine keeps in host memory: vLLM --max-cpu-loras, SGLang --max-loaded-loras",
    }),
    max_lora_rank: z.number().int().min(1).max(1024),
    max_registered: z.number().int().min(1).max(100_000).optional().openapi({
      description:
        "Adapters kept registered (on disk) here; default 4 × max_cpu_loras on vLLM, max_cpu_loras on SGLang (which evicts an adapter itself past --max-loaded-loras)",
    }),
    disk_budget_bytes: z
      .number()
      .int()
      .min(1)
      .max(Number.MAX_SAFE_INTEGER)
      .optional()
      .openapi({ description: "Adapter bytes the agent may keep on disk; default 50 GiB" }),
  })
  .refine((b) => b.max_cpu_loras >= b.max_loras, {
    message: "the engine requires max_cpu_loras ≥ max_loras",
    path: ["max_cpu_loras"],
  })
  .refine((b) => b.engine !== "vllm" || (VLLM_LORA_RANKS as readonly number[]).includes(b.max_lora_rank), {
    message: `must be one of vLLM's ranks: ${VLLM_LORA_RANKS.join(", ")}`,
    path: ["max_lora_rank"],
  })
  .refine(
    (b) => b.engine !== "sglang" || b.max_registered === undefined || b.max_registered <= b.max_cpu_loras,
    {
      message: "SGLang evicts on its own past --max-loaded-loras: max_registered must be ≤ max_cpu_loras",
      path: ["max_registered"],
    },
  )
  .openapi("CreateReplica");

export const DEFAULT_DISK_BUDGET_BYTES = 50 * 1024 ** 3;

/**
 * vLLM registers more adapters than its CPU LRU holds (a registered adapter off the LRU reloads
 * from disk in a step). SGLang holds every registered adapter in memory and past
 * `--max-loaded-loras` unregisters its least recently used one by itself (managers/
 * tokenizer_control_mixin.py), behind the scheduler's back: there registered and loaded are one count,
 * kept within the flag so that only the scheduler evicts.
 */
export function defaultMaxRegistered(engine: ReplicaEngine, maxCpuLoras: number): number {
  return engine === "sglang" ? maxCpuLoras : Math.max(maxCpuLoras * 4, 8);
}

export const ReplicaId = z.string().regex(/^rep_[0-9a-z]{1,64}$/, "must be a replica id (rep_…)");
export const replicaParams = z.object({ id: ReplicaId.openapi({ param: { name: "id", in: "path" } }) });

export const Replica = z
  .object({
    id: z.string(),
    url: z.string(),
    engine: z.enum(REPLICA_ENGINES),
    agent_url: z.string().nullable(),
    base_model: z.string(),
    max_loras: z.number(),
    max_cpu_loras: z.number(),
    max_lora_rank: z.number(),
    max_registered: z.number(),
    disk_budget_bytes: z.number(),
    status: z.enum(["unknown", "up", "down", "draining"]).openapi({
      description: "Health from the fleet poller; `draining` while it is up and an operator drains it",
    }),
    draining_since: z
      .string()
      .nullable()
      .openapi({ description: "When an operator drained it (kept while it is down); null if not draining" }),
    last_seen_at: z.string().nullable(),
    live: z
      .object({
        registered_adapters: z.array(z.string()),
        running: z.number(),
        waiting: z.number(),
        kv_cache_usage: z.number().nullable(),
        max_model_len: z
          .number()
          .nullable()
          .openapi({ description: "The replica's context window, as /v1/models reports it" }),
      })
      .nullable(),
    created_at: z.string(),
  })
  .openapi("Replica");

export function toReplicaDto(row: ReplicaRow): z.infer<typeof Replica> {
  return {
    id: row.id,
    url: row.url,
    engine: row.engine,
    agent_url: row.agentUrl,
    base_model: row.baseModelId,
    max_loras: row.maxLoras,
    max_cpu_loras: row.maxCpuLoras,
    max_lora_rank: row.maxLoraRank,
    max_registered: row.maxRegistered,
    disk_budget_bytes: row.diskBudgetBytes,
    status: replicaDisplayStatus(row),
    draining_since: row.drainingSince?.toISOString() ?? null,
    last_seen_at: row.lastSeenAt?.toISOString() ?? null,
    live: row.liveState
      ? {
          registered_adapters: row.liveState.registeredAdapters,
          running: row.liveState.running,
          waiting: row.liveState.waiting,
          kv_cache_usage: row.liveState.kvCacheUsage,
          max_model_len: row.liveState.maxModelLen ?? null,
        }
      : null,
    created_at: row.createdAt.toISOString(),
  };
}
