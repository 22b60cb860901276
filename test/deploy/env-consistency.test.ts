import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { AgentEnvSchema, EnvSchema } from "../../lib/env.ts";
import {
  type Container,
  loadCompose,
  loadExampleSecrets,
  loadK8sObjects,
  loraplaneContainers,
  loraplaneServices,
  podTemplate,
  ROOT,
} from "./deployment-files.ts";

/**
 * Variables read outside lib/env.ts by code that ships in the image: the replica simulator reads
 * vLLM's own switch exactly as vLLM does (infra/replica-sim/cli.ts). Found by the scan below.
 */
const OTHER_READERS: Record<string, string[]> = {
  "infra/replica-sim/cli.ts": ["VLLM_ALLOW_RUNTIME_LORA_UPDATING", "VLLM_API_KEY"],
};

function codeVariables(): Set<string> {
  return new Set([
    ...Object.keys(EnvSchema.shape),
    ...Object.keys(AgentEnvSchema.shape),
    ...Object.values(OTHER_READERS).flat(),
  ]);
}

/** `VAR` cells of README's configuration tables (first column, `A` / `B` rows too). */
function readmeVariables(): Set<string> {
  const names = new Set<string>();
  for (const line of readFileSync(resolve(ROOT, "README.md"), "utf8").split("\n")) {
    const first = /^\|([^|]+)\|/.exec(line)?.[1];
    for (const m of first?.matchAll(/`([A-Z][A-Z0-9_]+)`/g) ?? []) {
      names.add(m[1] as string);
    }
  }
  return names;
}

/** Names a container's environment gets: env entries, and every key of the ConfigMaps/Secrets it imports. */
function containerVariables(container: Container, sources: Map<string, string[]>): string[] {
  const imported = (container.envFrom ?? []).flatMap((from) => {
    const ref = from.configMapRef ? `ConfigMap/${from.configMapRef.name}` : `Secret/${from.secretRef?.name}`;
    const keys = sources.get(ref);
    if (!keys) {
      throw new Error(`${container.name} imports ${ref}, which no manifest defines`);
    }
    return keys;
  });
  const env = container.env ?? [];
  // Downward-API helpers that exist only to be expanded into another value, e.g. $(POD_NAME).
  const helpers = new Set(
    env
      .filter((e) => e.valueFrom?.fieldRef && env.some((o) => o.value?.includes(`$(${e.name})`)))
      .map((e) => e.name),
  );
  return [...imported, ...env.map((e) => e.name).filter((n) => !helpers.has(n))];
}

function k8sVariables(): Set<string> {
  const objects = [...loadK8sObjects(), ...loadExampleSecrets()];
  const sources = new Map<string, string[]>();
  for (const o of objects) {
    if (o.kind === "ConfigMap" || o.kind === "Secret") {
      const data = { ...(o.data as object | undefined), ...(o.stringData as object | undefined) };
      sources.set(`${o.kind}/${o.metadata.name}`, Object.keys(data));
    }
  }
  // In Kubernetes the real vLLM stands where the simulator does: its own switches count there.
  const simulated = new Set(Object.values(OTHER_READERS).flat());
  const onVllm = objects
    .flatMap((o) => podTemplate(o)?.spec.containers ?? [])
    .filter((c) => c.image?.startsWith("vllm/vllm-openai:"))
    .flatMap((c) => (c.env ?? []).map((e) => e.name))
    .filter((name) => simulated.has(name));
  return new Set([
    ...loraplaneContainers(objects).flatMap(({ container }) => containerVariables(container, sources)),
    ...onVllm,
  ]);
}

function composeVariables(): Set<string> {
  return new Set(loraplaneServices(loadCompose()).flatMap(([, s]) => Object.keys(s.environment ?? {})));
}

const sorted = (s: Set<string>) => [...s].sort();
const minus = (a: Set<string>, b: Set<string>) => sorted(new Set([...a].filter((x) => !b.has(x))));

describe("every variable the code reads is documented and deployed, and nothing else is", () => {
  const code = codeVariables();

  it("finds no process.env reader outside lib/env.ts but the known ones (tests, benchmarks and dev tooling aside)", async () => {
    const { execFileSync } = await import("node:child_process");
    const files = execFileSync("git", ["ls-files", "--cached", "--others", "--exclude-standard", "*.ts"], {
      cwd: ROOT,
      encoding: "utf8",
    })
      .split("\n")
      .filter((f) => f && !/^(test|bench|infra\/dev)\/|\.test\.ts$|^lib\/env\.ts$|\.config\.ts$/.test(f));
    const readers: Record<string, string[]> = {};
    for (const file of files) {
      let text: string;
      try {
        text = readFileSync(resolve(ROOT, file), "utf8");
      } catch {
        continue;
      }
      if (/process\.env\b/.test(text)) {
        const names = [
          ...text.matchAll(/\b(?:env|process\.env)(?:\.([A-Z][A-Z0-9_]+)|\[["']([A-Z][A-Z0-9_]+)["']\])/g),
        ]
          .map((m) => (m[1] ?? m[2]) as string)
          .filter((n) => n !== undefined);
        readers[file] = [...new Set(names)].sort();
      }
    }
    expect(Object.keys(readers).sort()).toEqual(Object.keys(OTHER_READERS).sort());
    for (const [file, names] of Object.entries(readers)) {
      for (const name of names) {
        expect(OTHER_READERS[file], `${file} reads ${name}`).toContain(name);
      }
    }
  });

  it("README's tables list exactly the variables the code reads", () => {
    const readme = readmeVariables();
    expect({ undocumented: minus(code, readme), unknown: minus(readme, code) }).toEqual({
      undocumented: [],
      unknown: [],
    });
  });

  it("the Kubernetes manifests set exactly the variables the code reads (ConfigMap, Secrets, env)", () => {
    const k8s = k8sVariables();
    expect({ missing: minus(code, k8s), unknown: minus(k8s, code) }).toEqual({ missing: [], unknown: [] });
  });

  it("the compose file sets exactly the variables the code reads", () => {
    const compose = composeVariables();
    expect({ missing: minus(code, compose), unknown: minus(compose, code) }).toEqual({
      missing: [],
      unknown: [],
    });
  });
});
