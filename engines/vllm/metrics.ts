/**
 * vLLM's `/metrics` (Prometheus text format 0.0.4) as loraplane reads it: the running and waiting
 * queues, KV-cache use, and `vllm:lora_requests_info` (vllm/v1/metrics/loggers.py).
 */

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface LoraRequestsInfo {
  maxLora: number | null;
  /** Since 2025-11 identical to `waiting`: adapters with any queued or running request. */
  running: string[];
  waiting: string[];
  /** The series' value: unix seconds when this set was last current. */
  updatedAt: number;
}

export interface ReplicaMetrics {
  running: number | null;
  waiting: number | null;
  waitingByReason: { capacity: number; deferred: number } | null;
  /** 0–1, from `vllm:kv_cache_usage_perc` or the removed `vllm:gpu_cache_usage_perc`. */
  kvCacheUsage: number | null;
  lora: LoraRequestsInfo | null;
  promptTokensTotal: number | null;
  generationTokensTotal: number | null;
  preemptionsTotal: number | null;
  requestSuccessTotal: Record<string, number>;
  samples: PromSample[];
}

function unescapeLabel(v: string): string {
  return v.replace(/\\(["\\n])/g, (_m, c: string) => (c === "n" ? "\n" : c));
}

function parseLabels(text: string): Record<string, string> | null {
  const labels: Record<string, string> = {};
  const re = /\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)/gy;
  let pos = 0;
  while (pos < text.length) {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (!m || m[1] === undefined || m[2] === undefined) {
      return text.slice(pos).trim() === "" ? labels : null;
    }
    labels[m[1]] = unescapeLabel(m[2]);
    pos = re.lastIndex;
  }
  return labels;
}

function parseNumber(s: string): number {
  if (s === "+Inf" || s === "Inf") {
    return Number.POSITIVE_INFINITY;
  }
  if (s === "-Inf") {
    return Number.NEGATIVE_INFINITY;
  }
  return Number(s);
}

const LORA_INFO = "vllm:lora_requests_info";

/**
 * Prometheus text format 0.0.4 → samples. Comments, blank and malformed lines are skipped. Of
 * `vllm:lora_requests_info` only the newest series (the largest value) is kept: vLLM never removes
 * the stale ones, and a long-running replica has thousands.
 */
export function parsePrometheusText(text: string): PromSample[] {
  const out: PromSample[] = [];
  let newestLora: PromSample | null = null;
  let loraAt = -1;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) {
      continue;
    }
    if (line.startsWith(`${LORA_INFO}{`) && newestLora !== null && !newerLoraLine(line, newestLora.value)) {
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/.exec(line);
    if (!m || m[1] === undefined || m[3] === undefined) {
      continue;
    }
    const labels = m[2] === undefined ? {} : parseLabels(m[2]);
    const value = parseNumber(m[3]);
    if (labels === null || Number.isNaN(value)) {
      continue;
    }
    const sample = { name: m[1], labels, value };
    if (sample.name === LORA_INFO) {
      // The newest series takes the place of the first one seen.
      if (newestLora === null) {
        loraAt = out.length;
        out.push(sample);
        newestLora = sample;
      } else if (value > newestLora.value) {
        out[loraAt] = sample;
        newestLora = sample;
      }
      continue;
    }
    out.push(sample);
  }
  return out;
}

/** Whether a `lora_requests_info` line's value (its last field) beats `newest`, without parsing its labels. */
function newerLoraLine(line: string, newest: number): boolean {
  const value = parseNumber(line.slice(line.lastIndexOf(" ") + 1));
  return Number.isNaN(value) || value > newest;
}

function sumOf(
  samples: readonly PromSample[],
  name: string,
  where: (l: Record<string, string>) => boolean = () => true,
) {
  let found = false;
  let total = 0;
  for (const s of samples) {
    if (s.name === name && where(s.labels)) {
      found = true;
      total += s.value;
    }
  }
  return found ? total : null;
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

// A fraction per engine: several engines (data parallel) are averaged, not summed.
function averageOf(samples: readonly PromSample[], name: string): number | null {
  const values = samples.filter((s) => s.name === name).map((s) => s.value);
  return values.length === 0 ? null : values.reduce((a, b) => a + b, 0) / values.length;
}
