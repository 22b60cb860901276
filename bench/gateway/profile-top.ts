// Summarizes a V8 .cpuprofile (node --cpu-prof): the functions with the most self time, and the
// same grouped by package or project folder. For the diagnostic run described in run.ts.
// Usage: node bench/gateway/profile-top.ts FILE.cpuprofile [--top 30] [--skip-ms N] [--callers NAME [--depth 6]]
// (--callers: the call paths, --depth frames up (default 6), that lead to functions named NAME, by self time)
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    top: { type: "string", default: "30" },
    callers: { type: "string" },
    depth: { type: "string", default: "6" },
    "skip-ms": { type: "string", default: "0" },
  },
});
const file = positionals[0];
if (!file) {
  throw new Error("usage: profile-top.ts FILE.cpuprofile [--top 30]");
}
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parentOf = new Map<number, number>();
for (const node of profile.nodes) {
  for (const child of node.children ?? []) {
    parentOf.set(child, node.id);
  }
}
const selfUs = new Map<number, number>();
// --skip-ms: leave out the process's start (module loading, warm-up) to see its steady state.
const skipUs = Number(values["skip-ms"]) * 1000;
let elapsedUs = 0;
profile.samples.forEach((id, i) => {
  elapsedUs += profile.timeDeltas[i] ?? 0;
  // Idle time is not the process's cost: shares below are of the time it was busy.
  if (elapsedUs >= skipUs && byId.get(id)?.callFrame.functionName !== "(idle)") {
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
});
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);

function where(url: string): string {
  const modules = url.lastIndexOf("node_modules/");
  if (modules !== -1) {
    const rest = url.slice(modules + "node_modules/".length).split("/");
    return rest[0]?.startsWith("@") ? `${rest[0]}/${rest[1]}` : (rest[0] ?? url);
  }
  if (url.startsWith("node:")) {
    return url;
  }
  const project = /\/(api|db|lib|scheduler|adapters|metering|infra)\/(.*)$/.exec(url);
  return project ? `${project[1]}/${project[2]}` : url || "(native)";
}

const functions = new Map<string, number>();
const groups = new Map<string, number>();
for (const [id, us] of selfUs) {
  const node = byId.get(id);
  if (!node) {
    continue;
  }
  const { functionName, url, lineNumber } = node.callFrame;
  const name = `${functionName || "(anonymous)"}  ${where(url)}${url ? `:${lineNumber + 1}` : ""}`;
  functions.set(name, (functions.get(name) ?? 0) + us);
  const group = url ? where(url).replace(/^(api|db|lib|scheduler)\/.*/, "$1/") : functionName;
  groups.set(group, (groups.get(group) ?? 0) + us);
}
const top = Number(values.top);
const show = (title: string, map: Map<string, number>) => {
  process.stdout.write(`\n${title} (of ${(total / 1000).toFixed(0)} ms busy)\n`);
  for (const [name, us] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    process.stdout.write(
      `${((100 * us) / total).toFixed(1).padStart(5)} %  ${(us / 1000).toFixed(0).padStart(6)} ms  ${name}\n`,
    );
  }
};
show("Self time by function", functions);
show("Self time by package / folder", groups);

if (values.callers !== undefined) {
  const depth = Number(values.depth);
  const paths = new Map<string, number>();
  for (const [id, us] of selfUs) {
    if (byId.get(id)?.callFrame.functionName !== values.callers) {
      continue;
    }
    const frames: string[] = [];
    for (let up = parentOf.get(id); up !== undefined && frames.length < depth; up = parentOf.get(up)) {
      const frame = byId.get(up)?.callFrame;
      if (frame) {
        frames.push(`${frame.functionName || "(anonymous)"} ${where(frame.url)}:${frame.lineNumber + 1}`);
      }
    }
    const path = frames.join(" ← ");
    paths.set(path, (paths.get(path) ?? 0) + us);
  }
  show(`Call paths into ${values.callers}`, paths);
}
