/**
 * vLLM's `/metrics` (Prometheus text format 0.0.4) as loraplane reads it: the running and waiting
 * queues, KV-cache use, and `vllm:lora_requests_info` (vllm/v1/metrics/loggers.py).
 */

import { averageOf, type PromSample, parsePrometheusText as parsePrometheus, sumOf } from "../prometheus.ts";
import type { LoraRequestsInfo, ReplicaMetrics } from "../replica-client.ts";

export type { PromSample } from "../prometheus.ts";

const LORA_INFO = "vllm:lora_requests_info";

/**
 * Prometheus text → samples. Of `vllm:lora_requests_info` only the newest series (the largest value)
 * is kept: vLLM never removes the stale ones, and a long-running replica has thousands.
 */
export function parsePrometheusText(text: string): PromSample[] {
  return parsePrometheus(text, LORA_INFO);
}

function splitAdapters(label: string | undefined): string[] {
  return (label ?? "").split(",").filter((s) => s !== "");
}

/** Gauges summed over engines; `lora_requests_info` is the series with the largest value (newest). */
export function summarizeMetrics(samples: PromSample[]): ReplicaMetrics {
  const capacity = sumOf(samples, "vllm:num_requests_waiting_by_reason", (l) => l.reason === "capacity");
  const deferred = sumOf(samples, "vllm:num_requests_waiting_by_reason", (l) => l.reason === "deferred");
  let lora: LoraRequestsInfo | null = null;
  for (const s of samples) {
    if (s.name === "vllm:lora_requests_info" && (lora === null || s.value > lora.updatedAt)) {
      const max = s.labels.max_lora === undefined ? Number.NaN : Number(s.labels.max_lora);
      lora = {
        maxLora: Number.isFinite(max) ? max : null,
        running: splitAdapters(s.labels.running_lora_adapters),
        waiting: splitAdapters(s.labels.waiting_lora_adapters),
        updatedAt: s.value,
      };
    }
  }
  const requestSuccessTotal: Record<string, number> = {};
  for (const s of samples) {
    if (s.name === "vllm:request_success_total") {
      const r = s.labels.finished_reason ?? "";
      requestSuccessTotal[r] = (requestSuccessTotal[r] ?? 0) + s.value;
    }
  }
  return {
    running: sumOf(samples, "vllm:num_requests_running"),
    waiting: sumOf(samples, "vllm:num_requests_waiting"),
    waitingByReason:
      capacity === null && deferred === null ? null : { capacity: capacity ?? 0, deferred: deferred ?? 0 },
    kvCacheUsage:
      averageOf(samples, "vllm:kv_cache_usage_perc") ?? averageOf(samples, "vllm:gpu_cache_usage_perc"),
    lora,
    promptTokensTotal: sumOf(samples, "vllm:prompt_tokens_total"),
    generationTokensTotal: sumOf(samples, "vllm:generation_tokens_total"),
    preemptionsTotal: sumOf(samples, "vllm:num_preemptions_total"),
    requestSuccessTotal,
    samples,
  };
}
