import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "./deployment-files.ts";

/**
 * The Docker build context, computed as the Docker CLI does from .dockerignore (moby's
 * patternmatcher): a path is excluded when the last pattern matching it or one of its parent
 * directories is not negated. There is no Docker engine here, so the image is checked statically.
 */
interface Pattern {
  negated: boolean;
  regex: RegExp;
  /** The literal directory prefix before the first wildcard, to know when a negation may re-include below. */
  prefix: string;
}

function compile(line: string): Pattern {
  const negated = line.startsWith("!");
  const cleaned = (negated ? line.slice(1) : line).trim().replace(/^\/+/, "").replace(/\/+$/, "");
  let source = "";
  for (let i = 0; i < cleaned.length; i++) {
    const ch = cleaned[i] as string;
    if (ch === "*" && cleaned[i + 1] === "*") {
      // `**/` matches any number of directories, `**` at the end anything.
      source += cleaned[i + 2] === "/" ? "(?:.*/)?" : ".*";
      i += cleaned[i + 2] === "/" ? 2 : 1;
    } else if (ch === "*") {
      source += "[^/]*";
    } else if (ch === "?") {
      source += "[^/]";
    } else {
      source += ch.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    }
  }
  const wildcard = cleaned.search(/[*?[]/);
  return {
    negated,
    regex: new RegExp(`^${source}$`),
    prefix: wildcard === -1 ? cleaned : cleaned.slice(0, wildcard),
  };
}

function loadPatterns(): Pattern[] {
  return readFileSync(resolve(ROOT, ".dockerignore"), "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map(compile);
}

function excluded(path: string, patterns: Pattern[]): boolean {
  const candidates = [path];
  for (let p = dirname(path); p !== "."; p = dirname(p)) {
    candidates.push(p);
  }
  let result = false;
  for (const pattern of patterns) {
    if (candidates.some((c) => pattern.regex.test(c))) {
      result = !pattern.negated;
    }
  }
  return result;
}

function buildContext(): string[] {
  const patterns = loadPatterns();
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(resolve(ROOT, dir), { withFileTypes: true })) {
      const path = dir === "" ? entry.name : `${dir}/${entry.name}`;
      if (entry.isDirectory()) {
        // Like Docker, skip an excluded directory unless a negation could re-include something in it.
        const reopened = patterns.some(
          (p) => p.negated && (p.prefix.startsWith(`${path}/`) || p.prefix === path),
        );
        if (excluded(path, patterns) && !reopened) {
          continue;
        }
        walk(path);
      } else if (!excluded(path, patterns)) {
        files.push(path);
      }
    }
  };
  walk("");
  return files.sort();
}

/** Every source file the image's entry point can load: static and literal dynamic relative imports. */
function reachableModules(entry: string): Set<string> {
  const seen = new Set<string>();
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (seen.has(file)) {
      continue;
    }
    seen.add(file);
    const text = readFileSync(resolve(ROOT, file), "utf8");
    const specifiers = [
      ...text.matchAll(/(?:from|import)\s*\(?\s*["'](\.{1,2}\/[^"']+)["']/g),
      ...text.matchAll(/:\s*["'](\.{1,2}\/[^"']+\.ts)["']/g),
    ].map((m) => m[1] as string);
    for (const specifier of specifiers) {
      const target = relative(ROOT, resolve(ROOT, dirname(file), specifier));
      if (target.endsWith(".ts") && existsSync(resolve(ROOT, target))) {
        queue.push(target);
      }
    }
  }
  return seen;
}

describe("the Docker build context and Dockerfile", () => {
  const context = buildContext();
  const inContext = new Set(context);

  it("holds every module the entry point can load, the migrations and the lockfile", () => {
    const needed = [
      ...reachableModules("infra/docker/entrypoint.ts"),
      "package.json",
      "package-lock.json",
      ...readdirSync(resolve(ROOT, "db/migrations"))
        .filter((f) => f.endsWith(".sql"))
        .map((f) => `db/migrations/${f}`),
      "db/migrations/meta/_journal.json",
    ];
    expect(needed.length).toBeGreaterThan(100);
    expect(needed.filter((f) => !inContext.has(f))).toEqual([]);
  });

  it("holds nothing the image does not run: no tests, benchmarks, dev tooling, local state or secrets", () => {
    const forbidden = context.filter((f) =>
      /^(test|bench|docs|node_modules|\.git|\.loraplane|\.ci|coverage|infra\/(dev|k8s|compose|grafana))\/|\.test\.ts$|(^|\/)\.env($|\.)|^Dockerfile$|\.md$/.test(
        f,
      ),
    );
    expect(forbidden).toEqual([]);
    const bytes = context.reduce((n, f) => n + statSync(resolve(ROOT, f)).size, 0);
    // The sources and the lockfile: a few MiB at most (node_modules or fixtures would be far more).
    expect(bytes).toBeLessThan(8 * 1024 * 1024);
  });

  it("copies only paths that exist in the context, in a multi-stage build that runs as a non-root user", () => {
    const dockerfile = readFileSync(resolve(ROOT, "Dockerfile"), "utf8");
    const lines = dockerfile.split("\n").filter((l) => !l.trimStart().startsWith("#"));
    const stages = lines.filter((l) => /^FROM\s/i.test(l));
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const copies = lines.filter((l) => /^COPY\s/i.test(l) && !/--from=/.test(l));
    expect(copies.length).toBeGreaterThan(0);
    for (const copy of copies) {
      const parts = copy
        .replace(/^COPY\s+/i, "")
        .split(/\s+/)
        .filter((p) => p !== "" && !p.startsWith("--"));
      for (const source of parts.slice(0, -1)) {
        expect(
          context.some((f) => f === source || f.startsWith(`${source}/`)),
          `${source} is not in the build context`,
        ).toBe(true);
      }
    }
    const userLine = lines.findLast((l) => /^USER\s/i.test(l));
    expect(userLine).toBeDefined();
    expect(userLine).not.toMatch(/USER\s+(root|0)(\s|:|$)/i);
    expect(lines.findIndex((l) => /^USER\s/i.test(l))).toBeLessThan(
      lines.findIndex((l) => /^ENTRYPOINT/i.test(l)),
    );
    expect(dockerfile).toMatch(/ENTRYPOINT \[[^\]]*"infra\/docker\/entrypoint\.ts"\]/);
    const nodeMajor = readFileSync(resolve(ROOT, ".node-version"), "utf8").trim().split(".")[0];
    expect(dockerfile).toContain(`ARG NODE_IMAGE=node:${nodeMajor}-`);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
  });

  it("ignores what .gitignore ignores at the top level (local state and secrets)", () => {
    for (const path of [".env", ".loraplane/s3/x", "node_modules/hono/package.json", "test/harness.ts"]) {
      expect(excluded(path, loadPatterns()), path).toBe(true);
    }
    for (const path of ["api/main.ts", "infra/docker/entrypoint.ts", "db/migrations/0000_init.sql"]) {
      expect(excluded(path, loadPatterns()), path).toBe(false);
    }
  });
});
