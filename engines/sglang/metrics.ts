import { averageOf, parsePrometheusText, sumOf } from "../prometheus.ts";
import type { ReplicaMetrics } from "../replica-client.ts";

/**
 * SGLang's `/metrics` (`--enable-metrics`; python/sglang/srt/metrics/collector.py): the running and
 * queued requests and the token pool's use. It has no per-adapter gauge, so `lora` is null and the
 * agent learns what a replica is serving from `/v1/models` and unload's own draining.
 */
export function parseSglangMetrics(text: string): ReplicaMetrics {
  const samples = parsePrometheusText(text);
  return {
    running: sumOf(samples, "sglang:num_running_reqs"),
    waiting: sumOf(samples, "sglang:num_queue_reqs"),
    waitingByReason: null,
    kvCacheUsage: averageOf(samples, "sglang:token_usage"),
    lora: null,
    promptTokensTotal: sumOf(samples, "sglang:prompt_tokens_total"),
    generationTokensTotal: sumOf(samples, "sglang:generation_tokens_total"),
    preemptionsTotal: null,
    requestSuccessTotal: {},
    samples,
  };
}
