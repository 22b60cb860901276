/**
 * The Prometheus text format 0.0.4 as both engines' `/metrics` speak it, read at a bounded cost:
 * one series of a gauge that an engine never prunes (vLLM's `lora_requests_info`) can be kept to
 * its newest without parsing the stale ones' labels.
 */

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
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

/**
 * Prometheus text format 0.0.4 → samples. Comments, blank and malformed lines are skipped. Of the
 * metric `newestOnly` only the newest series (the largest value) is kept, the others skipped
 * before their labels are parsed.
 */
export function parsePrometheusText(text: string, newestOnly?: string): PromSample[] {
  const out: PromSample[] = [];
  let newestLora: PromSample | null = null;
  let loraAt = -1;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) {
      continue;
    }
    if (
      newestOnly !== undefined &&
      line.startsWith(`${newestOnly}{`) &&
      newestLora !== null &&
      !newerLoraLine(line, newestLora.value)
    ) {
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
    if (sample.name === newestOnly) {
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

export function sumOf(
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

// A fraction per engine: several engines (data parallel) are averaged, not summed.
export function averageOf(samples: readonly PromSample[], name: string): number | null {
  const values = samples.filter((s) => s.name === name).map((s) => s.value);
  return values.length === 0 ? null : values.reduce((a, b) => a + b, 0) / values.length;
}
