/** Prometheus text exposition in the shape prometheus_client (Python) writes it for vLLM. */

export type Labels = Readonly<Record<string, string>>;

export class Histogram {
  readonly buckets: readonly number[];
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(buckets: readonly number[]) {
    this.buckets = buckets;
    this.counts = buckets.map(() => 0);
  }

  observe(v: number): void {
    this.sum += v;
    this.count += 1;
    for (let i = 0; i < this.buckets.length; i++) {
      if (v <= (this.buckets[i] ?? Number.POSITIVE_INFINITY)) {
        this.counts[i] = (this.counts[i] ?? 0) + 1;
      }
    }
  }
}

export const TTFT_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
  80.0, 160.0, 640.0, 2560.0,
];
export const ITL_BUCKETS = [
  0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
];
export const REQUEST_LATENCY_BUCKETS = [
  0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
  960.0, 1920.0, 7680.0,
];

/** vLLM's `build_1_2_5_buckets(max_model_len)`. */
export function buckets125(max: number): number[] {
  const out: number[] = [];
  for (let exp = 0; ; exp++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** exp;
      if (v > max) {
        return out;
      }
      out.push(v);
    }
  }
}

/** prometheus_client's `floatToGoString`: `37.0`, `0.25`, `1.747829402123e+09`, `+Inf`. */
export function formatValue(v: number): string {
  if (v === Number.POSITIVE_INFINITY) {
    return "+Inf";
  }
  if (v === Number.NEGATIVE_INFINITY) {
    return "-Inf";
  }
  if (Number.isNaN(v)) {
    return "NaN";
  }
  let s = Number.isInteger(v) && Math.abs(v) < 1e16 ? `${v}.0` : String(v);
  const dot = s.indexOf(".");
  if (v > 0 && dot > 6 && !s.includes("e")) {
    const mantissa = `${s[0]}.${s.slice(1, dot)}${s.slice(dot + 1)}`.replace(/[0.]+$/, "");
    s = `${mantissa}e+0${dot - 1}`;
  }
  return s;
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function labelText(labels: Labels): string {
  const keys = Object.keys(labels);
  if (keys.length === 0) {
    return "";
  }
  return `{${keys.map((k) => `${k}="${escapeLabel(labels[k] ?? "")}"`).join(",")}}`;
}

export class Exposition {
  private readonly lines: string[] = [];

  family(name: string, type: "gauge" | "counter" | "histogram", help: string): this {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    return this;
  }

  sample(name: string, labels: Labels, value: number): this {
    this.lines.push(`${name}${labelText(labels)} ${formatValue(value)}`);
    return this;
  }

  histogram(name: string, labels: Labels, h: Histogram): this {
    h.buckets.forEach((le, i) => {
      this.sample(`${name}_bucket`, { ...labels, le: formatValue(le) }, h.counts[i] ?? 0);
    });
    this.sample(`${name}_bucket`, { ...labels, le: "+Inf" }, h.count);
    this.sample(`${name}_count`, labels, h.count);
    this.sample(`${name}_sum`, labels, h.sum);
    return this;
  }

  text(): string {
    return `${this.lines.join("\n")}\n`;
  }
}
