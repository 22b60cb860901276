import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { type Container, loadCompose, loadK8sObjects, podTemplate, ROOT } from "./deployment-files.ts";

/** A list of an engine's valid CLI flags, taken from its source at one commit (infra/engine-flags/README.md). */
interface FlagList {
  engine: "vllm" | "sglang";
  repo: string;
  commit: string;
  release: string;
  sources: { path: string; commit: string }[];
  /** Registered at the commit but deprecated (argparse `deprecated=True`): refused in the manifests too. */
  deprecated: string[];
  flags: string[];
}

const readList = (engine: string): FlagList =>
  JSON.parse(readFileSync(resolve(ROOT, "infra/engine-flags", `${engine}.json`), "utf8")) as FlagList;
const LISTS = { vllm: readList("vllm"), sglang: readList("sglang") };
type Engine = keyof typeof LISTS;
const at = (list: FlagList) => `${list.repo}@${list.commit}`;

/** The engine a container image runs, or null for any other image. */
function engineOf(image: string | undefined): Engine | null {
  if (image?.startsWith("vllm/vllm-openai:")) {
    return "vllm";
  }
  if (image?.startsWith("lmsysorg/sglang:")) {
    return "sglang";
  }
  return null;
}

/** The option names in an argument vector: `--name=value` → `--name`, `--json.key` → `--json`. */
function flagsIn(argv: string[]): string[] {
  // SGLang's compose command starts with the interpreter: `python3 -m sglang.launch_server ...`.
  const start = argv.indexOf("sglang.launch_server") + 1;
  return argv
    .slice(start)
    .filter((a) => a.startsWith("-"))
    .map((a) => (a.split("=")[0] as string).replace(/^(--[^.]+)\..*$/, "$1"));
}

/** Flags the list refuses: not registered by the engine at the list's commit, or deprecated there. */
function refused(list: FlagList, flags: string[]): string[] {
  const valid = new Set(list.flags);
  const deprecated = new Set(list.deprecated);
  return flags.filter((f) => !valid.has(f) || deprecated.has(f));
}

interface Use {
  where: string;
  engine: Engine;
  flags: string[];
}

function manifestUses(): Use[] {
  const uses: Use[] = [];
  for (const owner of loadK8sObjects()) {
    for (const c of podTemplate(owner)?.spec.containers ?? ([] as Container[])) {
      const engine = engineOf(c.image);
      if (engine) {
        const argv = [...(c.command ?? []), ...(c.args ?? [])];
        uses.push({ where: `infra/k8s ${owner.metadata.name}/${c.name}`, engine, flags: flagsIn(argv) });
      }
    }
  }
  for (const [name, s] of Object.entries(loadCompose().services)) {
    // Compose images carry a `${TAG:-default}` tag: the repository names the engine.
    const engine = engineOf(s.image?.replace(/:\$\{[^}]+\}$/, ":tag"));
    if (engine) {
      uses.push({ where: `infra/compose ${name}`, engine, flags: flagsIn(s.command ?? []) });
    }
  }
  return uses;
}

const uses = manifestUses();

describe("engine flag lists (infra/engine-flags)", () => {
  it.each(Object.values(LISTS))(
    "$engine: one named commit, sources at commits, flags sorted and unique",
    (list) => {
      expect(list.commit).toMatch(/^[0-9a-f]{40}$/);
      expect(list.sources.length).toBeGreaterThan(0);
      for (const s of list.sources) {
        expect(s.commit, s.path).toMatch(/^[0-9a-f]{40}$/);
      }
      expect(list.flags).toEqual([...new Set(list.flags)].sort());
      for (const f of list.flags) {
        expect(f).toMatch(/^--?[a-zA-Z0-9][a-zA-Z0-9-]*$/);
      }
      for (const d of list.deprecated) {
        expect(list.flags, `deprecated ${d} is a registered flag`).toContain(d);
      }
    },
  );

  it("cover the flags the manifests' engines rely on (with --no- forms where vLLM uses BooleanOptionalAction)", () => {
    for (const f of [
      "--enable-lora",
      "--no-enable-lora",
      "--max-loras",
      "--max-cpu-loras",
      "--host",
      "--port",
    ]) {
      expect(LISTS.vllm.flags).toContain(f);
    }
    for (const f of [
      "--enable-lora",
      "--max-loras-per-batch",
      "--max-loaded-loras",
      "--lora-target-modules",
    ]) {
      expect(LISTS.sglang.flags).toContain(f);
    }
  });
});

describe("engine flags in the manifests", () => {
  it("find every vLLM and SGLang container and service", () => {
    const engines = uses.map((u) => u.engine);
    expect(engines.filter((e) => e === "vllm").length).toBeGreaterThanOrEqual(3);
    expect(engines.filter((e) => e === "sglang").length).toBeGreaterThanOrEqual(2);
    for (const u of uses) {
      expect(u.flags.length, u.where).toBeGreaterThan(3);
    }
  });

  it.each(Object.values(LISTS))(`are all valid $engine flags at $repo@$commit`, (list) => {
    for (const u of uses.filter((x) => x.engine === list.engine)) {
      expect(
        refused(list, u.flags),
        `${u.where}: not a valid, non-deprecated ${list.engine} flag at ${at(list)} (infra/engine-flags/${list.engine}.json)`,
      ).toEqual([]);
    }
  });

  it("the check refuses invented and deprecated flags (so the test above can fail)", () => {
    const argv = ["Qwen/x", "--enable-lora", "--max-loras=4", "--not-a-flag", "--disable-log-requests"];
    expect(refused(LISTS.vllm, flagsIn(argv))).toEqual(["--not-a-flag", "--disable-log-requests"]);
    expect(
      flagsIn(["python3", "-m", "sglang.launch_server", "--port=30000", "--compilation-config.level=3"]),
    ).toEqual(["--port", "--compilation-config"]);
    expect(refused(LISTS.sglang, ["--max-loras-per-batch", "--max-loras"])).toEqual(["--max-loras"]);
  });
});
