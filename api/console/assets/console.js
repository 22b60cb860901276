// The admin console: plain DOM and Chart.js, every number read from the admin JSON API.
const TOKEN_KEY = "loraplane.adminToken";
const POLL_MS = 3000;
const page = document.body.dataset.page;
const root = document.getElementById("page");
const statusEl = document.getElementById("status");
const charts = new Map();

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

class AuthError extends Error {}

async function api(path, init = {}) {
  const response = await fetch(path, {
    ...init,
    headers: {
      authorization: `Bearer ${token()}`,
      "content-type": "application/json",
      ...(init.headers ?? {}),
    },
  });
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(TOKEN_KEY);
    throw new AuthError((await response.json()).detail ?? "unauthorized");
  }
  if (response.status === 204) {
    return null;
  }
  const body = await response.json();
  if (!response.ok) {
    throw new Error(body.detail ?? `${response.status}`);
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) {
      continue;
    }
    if (key.startsWith("on")) {
      node.addEventListener(key.slice(2), value);
    } else if (key === "text") {
      node.textContent = String(value);
    } else {
      node.setAttribute(key, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

const int = (n) => (n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US"));
const num = (n, digits = 1) =>
  n === null || n === undefined || !Number.isFinite(n)
    ? "–"
    : n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const pct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`);
const ms = (n) => (n === null || n === undefined ? "–" : n >= 10_000 ? `${num(n / 1000)} s` : `${int(n)} ms`);
const usd = (n) =>
  n === null || n === undefined
    ? "–"
    : `$${n.toLocaleString("en-US", { maximumFractionDigits: n !== 0 && Math.abs(n) < 1 ? 6 : 2, minimumFractionDigits: 2 })}`;

function stat(label, testid, value) {
  return el(
    "div",
    { class: "stat" },
    el("span", { class: "label", text: label }),
    el("span", { class: "value", "data-testid": testid, text: value }),
  );
}

function table(columns, rows, rowAttrs = () => ({})) {
  return el(
    "table",
    {},
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        columns.map((c) => el("th", { text: c.label })),
      ),
    ),
    el(
      "tbody",
      {},
      rows.map((row) =>
        el(
          "tr",
          rowAttrs(row),
          columns.map((c) => {
            const value = c.value(row);
            return el("td", { "data-field": c.key }, value instanceof Node ? value : String(value));
          }),
        ),
      ),
    ),
  );
}

function section(title, ...children) {
  return el("section", {}, el("h2", { text: title }), ...children);
}

/** Creates a chart once, then swaps its data in place so that polling does not flicker. */
function drawChart(id, config) {
  const existing = charts.get(id);
  if (existing && document.body.contains(existing.canvas)) {
    existing.data.labels = config.data.labels;
    config.data.datasets.forEach((dataset, i) => {
      if (existing.data.datasets[i]) {
        existing.data.datasets[i].data = dataset.data;
      } else {
        existing.data.datasets.push(dataset);
      }
    });
    existing.update("none");
    return existing.canvas.parentElement;
  }
  const canvas = el("canvas", { id, "data-testid": id });
  const holder = el("div", { class: "chart" }, canvas);
  charts.set(
    id,
    new window.Chart(canvas, {
      ...config,
      options: { animation: false, maintainAspectRatio: false, ...config.options },
    }),
  );
  return holder;
}

function mount(id, ...children) {
  let box = document.getElementById(id);
  if (!box) {
    box = el("div", { id });
    root.append(box);
  }
  box.replaceChildren(...children);
  return box;
}

function chartSlot(id, config) {
  let slot = document.getElementById(`slot-${id}`);
  if (!slot) {
    slot = el("div", { id: `slot-${id}` });
    root.append(slot);
  }
  const holder = drawChart(id, config);
  if (holder.parentElement !== slot) {
    slot.replaceChildren(holder);
  }
}

// Fleet ---------------------------------------------------------------------------------------

async function refreshFleet() {
  const [replicas, fleet] = await Promise.all([api("/admin/replicas"), api("/admin/stats/fleet")]);
  const occupancy = new Map(fleet.data.map((r) => [r.replica_id, r]));
  const rows = replicas.data.map((r) => ({ ...r, occ: occupancy.get(r.id) }));
  mount(
    "fleet-summary",
    el(
      "div",
      { class: "stats" },
      stat("Replicas", "fleet-replicas", int(rows.length)),
      stat("Up", "fleet-up", int(rows.filter((r) => r.status === "up").length)),
      stat("Running", "fleet-running", int(rows.reduce((a, r) => a + (r.live?.running ?? 0), 0))),
      stat("Waiting", "fleet-waiting", int(rows.reduce((a, r) => a + (r.live?.waiting ?? 0), 0))),
    ),
  );
  mount(
    "fleet-table",
    section(
      "Replicas",
      table(
        [
          { key: "id", label: "Replica", value: (r) => r.id },
          { key: "base", label: "Base", value: (r) => r.base_model },
          {
            key: "status",
            label: "Health",
            value: (r) => (r.status !== "draining" && r.draining_since ? `${r.status}, draining` : r.status),
          },
          { key: "gpu", label: "GPU slots", value: (r) => `${r.occ?.gpu_slots_used ?? 0} / ${r.max_loras}` },
          {
            key: "cpu",
            label: "CPU cache",
            value: (r) => `${r.occ?.cpu_cache_used ?? 0} / ${r.max_cpu_loras}`,
          },
          {
            key: "registered",
            label: "Registered",
            value: (r) => `${r.live?.registered_adapters.length ?? 0} / ${r.max_registered}`,
          },
          { key: "running", label: "Running", value: (r) => int(r.live?.running ?? 0) },
          { key: "waiting", label: "Waiting", value: (r) => int(r.live?.waiting ?? 0) },
          { key: "loads", label: "Loads (1 h)", value: (r) => int(r.occ?.recent_loads ?? 0) },
          { key: "evictions", label: "Evictions (1 h)", value: (r) => int(r.occ?.recent_evictions ?? 0) },
          {
            key: "actions",
            label: "",
            value: (r) =>
              el(
                "span",
                {},
                el("button", {
                  type: "button",
                  "data-action": "drain",
                  disabled: r.draining_since ? "" : null,
                  text: "Drain",
                  onclick: () => act(`/admin/replicas/${r.id}/drain`, "POST", `Drain ${r.id}?`),
                }),
                el("button", {
                  type: "button",
                  class: "danger",
                  "data-action": "remove",
                  text: "Remove",
                  onclick: () => act(`/admin/replicas/${r.id}`, "DELETE", `Remove ${r.id} from the fleet?`),
                }),
              ),
          },
        ],
        rows,
        (r) => ({ "data-replica-id": r.id }),
      ),
    ),
  );
  chartSlot("fleet-chart", {
    type: "bar",
    data: {
      labels: rows.map((r) => r.id),
      datasets: [
        { label: "GPU slots used", data: rows.map((r) => r.occ?.gpu_slots_used ?? 0) },
        { label: "CPU cache used", data: rows.map((r) => r.occ?.cpu_cache_used ?? 0) },
        { label: "Registered", data: rows.map((r) => r.live?.registered_adapters.length ?? 0) },
        { label: "Running", data: rows.map((r) => r.live?.running ?? 0) },
      ],
    },
  });
}

async function act(path, method, question) {
  if (!window.confirm(question)) {
    return;
  }
  try {
    await api(path, { method });
    await refresh();
  } catch (error) {
    showStatus(error.message, true);
  }
}

// Demand --------------------------------------------------------------------------------------

async function refreshDemand() {
  const d = await api("/admin/stats/demand?hours=6");
  const labels = d.buckets.map((b) => new Date(b.bucket_start).toISOString().slice(11, 16));
  const r = d.routing;
  mount(
    "demand-summary",
    el(
      "div",
      { class: "stats" },
      stat("Requests (6 h)", "demand-requests", int(d.totals.requests)),
      stat("Prompt tokens", "demand-prompt-tokens", int(d.totals.prompt_tokens)),
      stat("Completion tokens", "demand-completion-tokens", int(d.totals.completion_tokens)),
      stat("Hit rate", "demand-hit-rate", pct(r.hit_rate)),
      stat("Cold start p50", "demand-cold-p50", ms(r.cold_start_ms.p50)),
      stat("Cold start p95", "demand-cold-p95", ms(r.cold_start_ms.p95)),
      stat("Loads / hour", "demand-loads", num(r.loads_per_hour)),
      stat("Evictions / hour", "demand-evictions", num(r.evictions_per_hour)),
    ),
  );
  chartSlot("demand-requests-chart", {
    type: "line",
    data: {
      labels,
      datasets: [
        { label: "Requests / 5 min", data: d.buckets.map((b) => b.requests), yAxisID: "y" },
        {
          label: "Tokens / 5 min",
          data: d.buckets.map((b) => b.prompt_tokens + b.completion_tokens),
          yAxisID: "y1",
        },
      ],
    },
    options: {
      scales: { y: { position: "left" }, y1: { position: "right", grid: { drawOnChartArea: false } } },
    },
  });
  chartSlot("demand-working-set-chart", {
    type: "line",
    data: {
      labels,
      datasets: [
        { label: "Working set (distinct adapters / 5 min)", data: d.buckets.map((b) => b.working_set) },
      ],
    },
  });
  chartSlot("demand-levels-chart", {
    type: "bar",
    data: {
      labels: ["hot", "warm", "registered", "cold"],
      datasets: [
        {
          label: "Share of routed requests (last hour)",
          data: ["hot", "warm", "registered", "cold"].map((l) => r.hit_rate_by_level[l] ?? 0),
        },
      ],
    },
  });
  mount(
    "demand-top",
    section(
      "Top adapters",
      table(
        [
          { key: "name", label: "Adapter", value: (a) => a.name },
          { key: "tenant", label: "Tenant", value: (a) => a.tenant_id },
          { key: "requests", label: "Requests", value: (a) => int(a.requests) },
          { key: "tokens", label: "Tokens", value: (a) => int(a.tokens) },
          { key: "cost", label: "Cost", value: (a) => usd(a.cost_usd) },
        ],
        d.top_adapters,
        (a) => ({ "data-adapter-id": a.adapter_id }),
      ),
    ),
    section(
      "Top tenants",
      table(
        [
          { key: "name", label: "Tenant", value: (t) => t.name },
          { key: "requests", label: "Requests", value: (t) => int(t.requests) },
          { key: "tokens", label: "Tokens", value: (t) => int(t.tokens) },
          { key: "cost", label: "Cost", value: (t) => usd(t.cost_usd) },
        ],
        d.top_tenants,
        (t) => ({ "data-tenant-id": t.tenant_id }),
      ),
    ),
  );
}

// Tenants -------------------------------------------------------------------------------------

let selectedTenant = null;

async function refreshTenants() {
  const t = await api("/admin/stats/tenants");
  mount(
    "tenants-table",
    section(
      `Tenants this month (since ${t.month_start.slice(0, 10)})`,
      table(
        [
          {
            key: "name",
            label: "Tenant",
            value: (row) =>
              el("a", {
                href: "#",
                text: row.name,
                onclick: (e) => {
                  e.preventDefault();
                  selectTenant(row.tenant_id);
                },
              }),
          },
          { key: "requests", label: "Requests", value: (row) => int(row.requests) },
          { key: "tokens", label: "Tokens", value: (row) => int(row.tokens) },
          { key: "cost", label: "Cost", value: (row) => usd(row.cost_usd) },
          {
            key: "budget",
            label: "Budget used",
            value: (row) => (row.budget_used === null ? "no budget" : pct(row.budget_used)),
          },
          {
            key: "limits",
            label: "Limits (rpm / tpm)",
            value: (row) => `${row.rpm ?? "∞"} / ${row.tpm ?? "∞"}`,
          },
          { key: "limited", label: "Rate-limited (1 h)", value: (row) => int(row.rate_limit_hits_last_hour) },
        ],
        t.data,
        (row) => ({ "data-tenant-id": row.tenant_id }),
      ),
    ),
  );
  chartSlot("tenants-chart", {
    type: "bar",
    data: {
      labels: t.data.map((row) => row.name),
      datasets: [{ label: "Cost this month (USD)", data: t.data.map((row) => row.cost_usd) }],
    },
  });
  if (selectedTenant) {
    await refreshTenantDetail();
  }
}

function selectTenant(id) {
  selectedTenant = id;
  refreshTenantDetail().catch(onError);
}

async function refreshTenantDetail() {
  const id = encodeURIComponent(selectedTenant);
  const from = new Date(Date.now() - 7 * 24 * 3600 * 1000).toISOString();
  const [usage, invoices] = await Promise.all([
    api(`/v1/usage?tenant_id=${id}&group_by=adapter&granularity=day&from=${encodeURIComponent(from)}`),
    api(`/v1/invoices?tenant_id=${id}`),
  ]);
  const byAdapter = new Map();
  for (const row of usage.data) {
    const key = row.adapter ?? "(base model)";
    const acc = byAdapter.get(key) ?? { adapter: key, requests: 0, tokens: 0, cost: 0 };
    acc.requests += row.requests;
    acc.tokens += row.prompt_tokens + row.completion_tokens;
    acc.cost += Number(row.cost_usd);
    byAdapter.set(key, acc);
  }
  const invoiceRows = invoices.data ?? [];
  mount(
    "tenant-detail",
    section(
      `Adapters of ${selectedTenant} (7 days)`,
      table(
        [
          { key: "adapter", label: "Adapter", value: (a) => a.adapter },
          { key: "requests", label: "Requests", value: (a) => int(a.requests) },
          { key: "tokens", label: "Tokens", value: (a) => int(a.tokens) },
          { key: "cost", label: "Cost", value: (a) => usd(a.cost) },
        ],
        [...byAdapter.values()],
      ),
    ),
    section(
      "Invoices",
      table(
        [
          { key: "period", label: "Period", value: (i) => i.period },
          { key: "status", label: "Status", value: (i) => i.status },
          { key: "requests", label: "Requests", value: (i) => int(i.requests) },
          { key: "total", label: "Total", value: (i) => usd(i.cost_usd) },
          {
            key: "csv",
            label: "",
            value: (i) =>
              el("a", {
                href: "#",
                text: "CSV",
                onclick: (e) => {
                  e.preventDefault();
                  downloadCsv(i.period);
                },
              }),
          },
        ],
        invoiceRows,
      ),
    ),
  );
}

async function downloadCsv(period) {
  const response = await fetch(
    `/v1/invoices/${period}?format=csv&tenant_id=${encodeURIComponent(selectedTenant)}`,
    {
      headers: { authorization: `Bearer ${token()}` },
    },
  );
  const url = URL.createObjectURL(await response.blob());
  el("a", { href: url, download: `invoice-${selectedTenant}-${period}.csv` }).click();
  URL.revokeObjectURL(url);
}

// Planner -------------------------------------------------------------------------------------

/** The GPU profile's fields that the form shows and sends (the rest come from the chosen profile). */
const GPU_FIELDS = [
  "price_per_hour_usd",
  "prefill_tokens_per_sec",
  "decode_ms_per_step",
  "decode_ms_per_extra_seq",
  "max_batch",
  "load_base_ms",
  "load_ms_per_mb",
];

const PLANNER_FIELDS = [
  ["trace", "Trace", "select", ["synthetic", "observed"]],
  ["adapters", "Adapters (synthetic)", "number", 1000],
  ["requests", "Requests (synthetic)", "number", 100000],
  ["rate_per_sec", "Requests / s (synthetic)", "number", 20],
  ["skew", "Zipf skew (synthetic)", "number", 1],
  ["mean_prompt_tokens", "Mean prompt tokens", "number", 512],
  ["mean_completion_tokens", "Mean completion tokens", "number", 256],
  ["observed_hours", "Observed window (hours)", "number", 24],
  ["gpu", "GPU type", "select", ["nvidia-l4", "nvidia-a10g", "nvidia-l40s", "nvidia-h100"]],
  ["price_per_hour_usd", "GPU price / hour (USD)", "number", ""],
  ["prefill_tokens_per_sec", "Prefill tokens / s", "number", ""],
  ["decode_ms_per_step", "Decode ms / step", "number", ""],
  ["decode_ms_per_extra_seq", "Decode ms / extra sequence", "number", ""],
  ["max_batch", "Sequences per batch", "number", ""],
  ["load_base_ms", "Adapter load ms (fixed)", "number", ""],
  ["load_ms_per_mb", "Adapter load ms / MB", "number", ""],
  ["replicas", "Replicas", "number", 4],
  ["max_loras", "GPU slots (max_loras)", "number", 8],
  ["max_cpu_loras", "CPU cache (max_cpu_loras)", "number", 16],
  ["max_registered", "Registered per replica", "number", 64],
  ["policy", "Placement policy", "select", ["gdsf", "lru"]],
  ["input_per_mtok_usd", "Frontier input $/1M tokens", "number", 2.5],
  ["output_per_mtok_usd", "Frontier output $/1M tokens", "number", 10],
  ["hit_rate", "Target hit rate", "number", 0.95],
  ["utilization", "Target GPU utilization", "number", 0.7],
];

function renderPlanner() {
  const form = el(
    "form",
    { id: "planner-form", class: "planner" },
    PLANNER_FIELDS.map(([name, label, kind, initial]) =>
      el(
        "label",
        {},
        label,
        kind === "select"
          ? el(
              "select",
              { name },
              initial.map((o) => el("option", { value: o, text: o })),
            )
          : el("input", { name, type: "number", step: "any", value: initial }),
      ),
    ),
    el("button", { type: "submit", text: "Plan" }),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    runPlan(form).catch(onError);
  });
  const fillGpu = () => {
    const profile = planProfiles?.[form.elements.gpu.value];
    for (const field of GPU_FIELDS) {
      form.elements[field].value = profile ? profile[field] : "";
    }
  };
  form.elements.gpu.addEventListener("change", fillGpu);
  mount("planner-input", section("Assumptions (editable)", form));
  mount("planner-result", el("p", { text: "Pick a trace and a fleet, then Plan." }));
  api("/admin/capacity/gpu-profiles")
    .then((profiles) => {
      planProfiles = profiles.data;
      fillGpu();
    })
    .catch(onError);
}

function planBody(form) {
  const v = Object.fromEntries(new FormData(form).entries());
  const n = (k) => Number(v[k]);
  const body = {
    replicas: n("replicas"),
    max_loras: n("max_loras"),
    max_cpu_loras: n("max_cpu_loras"),
    max_registered: n("max_registered"),
    policy: v.policy,
    frontier: {
      name: "frontier API",
      input_per_mtok_usd: n("input_per_mtok_usd"),
      output_per_mtok_usd: n("output_per_mtok_usd"),
    },
    target: { hit_rate: n("hit_rate"), utilization: n("utilization") },
    gpu: v.gpu,
  };
  if (v.trace === "observed") {
    body.trace = "observed";
    body.observed_hours = n("observed_hours");
  } else {
    body.trace = {
      synthetic: {
        adapters: n("adapters"),
        requests: n("requests"),
        rate_per_sec: n("rate_per_sec"),
        skew: n("skew"),
        mean_prompt_tokens: n("mean_prompt_tokens"),
        mean_completion_tokens: n("mean_completion_tokens"),
        seed: 1,
      },
    };
  }
  const profile = planProfiles?.[v.gpu];
  if (profile) {
    body.gpu = { ...profile };
    for (const field of GPU_FIELDS) {
      if (v[field] !== "") {
        body.gpu[field] = n(field);
      }
    }
  }
  return body;
}

async function runPlan(form) {
  const body = planBody(form);
  mount("planner-result", el("p", { text: "Replaying…" }));
  const p = await api("/admin/capacity/plan", { method: "POST", body: JSON.stringify(body) });
  mount(
    "planner-result",
    section(
      `Plan: ${p.trace.kind} trace, ${int(p.trace.requests)} requests over ${num(p.trace.hours, 2)} h, ${int(p.trace.adapters)} adapters (replayed in ${int(p.replay_ms)} ms)`,
      el(
        "div",
        { class: "stats" },
        stat("Hit rate", "plan-hit-rate", pct(p.hit_rate)),
        stat("Cold starts / hour", "plan-cold-starts", num(p.cold_starts_per_hour)),
        stat("p95 wait", "plan-p95-wait", ms(p.wait_ms.p95)),
        stat("GPU utilization", "plan-utilization", pct(p.utilization)),
        stat(
          "GPUs needed for target",
          "plan-gpus-needed",
          p.gpus_needed.total === null ? "unreachable" : int(p.gpus_needed.total),
        ),
        stat("GPU cost / month", "plan-gpu-cost", usd(p.cost_per_month_usd.gpus)),
        stat("Frontier API cost / month", "plan-frontier-cost", usd(p.cost_per_month_usd.frontier_api)),
        stat("Break-even (tokens / month)", "plan-break-even", int(p.break_even_tokens_per_month)),
      ),
      el(
        "p",
        { class: "note" },
        `GPUs needed: ${p.gpus_needed.for_throughput} for throughput at ${pct(p.assumptions.target.utilization)} utilization, ${p.gpus_needed.for_hit_rate ?? "∞"} for a ${pct(p.assumptions.target.hit_rate)} hit rate (estimated from LRU stack distances: plan that many replicas to check). GPU: ${p.assumptions.gpu.name} at ${usd(p.assumptions.gpu.price_per_hour_usd)}/h, ${p.assumptions.hours_per_month} h/month.`,
      ),
    ),
  );
  chartSlot("planner-cost-chart", {
    type: "bar",
    data: {
      labels: ["GPUs (this fleet)", "GPUs (needed for target)", "Frontier API"],
      datasets: [
        {
          label: "USD / month",
          data: [
            p.cost_per_month_usd.gpus,
            p.cost_per_month_usd.gpus_needed ?? 0,
            p.cost_per_month_usd.frontier_api,
          ],
        },
      ],
    },
  });
  chartSlot("planner-levels-chart", {
    type: "bar",
    data: {
      labels: ["hot", "warm", "registered", "cold"],
      datasets: [
        {
          label: "Requests by cost level",
          data: ["hot", "warm", "registered", "cold"].map((l) => p.hits_by_level[l]),
        },
      ],
    },
  });
}

let planProfiles = null;

// Shell ---------------------------------------------------------------------------------------

const PAGES = {
  fleet: { refresh: refreshFleet, live: true },
  demand: { refresh: refreshDemand, live: true },
  tenants: { refresh: refreshTenants, live: true },
  planner: { refresh: async () => {}, live: false, render: renderPlanner },
};

function showStatus(text, error = false) {
  statusEl.textContent = text;
  statusEl.className = error ? "error" : "";
}

function onError(error) {
  if (error instanceof AuthError) {
    showLogin(error.message);
    return;
  }
  showStatus(`error: ${error.message}`, true);
}

async function refresh() {
  await PAGES[page].refresh();
  showStatus(`updated ${new Date().toLocaleTimeString("en-GB")}`);
}

let timer = null;

function start() {
  document.getElementById("login").hidden = true;
  PAGES[page].render?.();
  refresh().catch(onError);
  if (PAGES[page].live && timer === null) {
    timer = setInterval(() => refresh().catch(onError), POLL_MS);
  }
}

function showLogin(message = "") {
  if (timer !== null) {
    clearInterval(timer);
    timer = null;
  }
  root.replaceChildren();
  charts.clear();
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message;
}

document.getElementById("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  start();
});
document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin();
});

if (token()) {
  start();
} else {
  showLogin();
}
