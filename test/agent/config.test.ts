import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, parseAgentConfig } from "../../lib/env.ts";

const MAIN = resolve(import.meta.dirname, "../../adapters/agent/main.ts");

const VALID = {
  AGENT_TOKEN: "0123456789abcdef",
  AGENT_REPLICA_URL: "http://127.0.0.1:8000",
  AGENT_CACHE_DIR: "/var/lib/loraplane/adapters",
  AGENT_DISK_BUDGET_BYTES: "107374182400",
};

function issuesOf(source: Record<string, string>): string[] {
  try {
    parseAgentConfig(source);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).issues.map((i) => `${i.variable}: ${i.message}`);
  }
  return [];
}

describe("agent configuration", () => {
  it("parses a complete environment, with S3 settings read like the API's", () => {
    const config = parseAgentConfig({
      ...VALID,
      AGENT_REPLICA_API_KEY: "k",
      S3_ENDPOINT: "http://127.0.0.1:9000",
      S3_BUCKET: "adapters",
      S3_ACCESS_KEY_ID: "id",
      S3_SECRET_ACCESS_KEY: "secret",
    });
    expect(config).toMatchObject({
      http: { host: "127.0.0.1", port: 8091 },
      token: VALID.AGENT_TOKEN,
      replica: { url: "http://127.0.0.1:8000", apiKey: "k" },
      cache: {
        dir: "/var/lib/loraplane/adapters",
        budgetBytes: 107374182400,
        gcIntervalMs: 5000,
        unloadGraceMs: 60_000,
      },
      s3: { endpoint: "http://127.0.0.1:9000", bucket: "adapters", accessKeyId: "id", forcePathStyle: true },
    });
  });

  it("names every missing required variable at once", () => {
    const names = issuesOf({}).map((i) => i.split(":")[0]);
    expect(names.sort()).toEqual([
      "AGENT_CACHE_DIR",
      "AGENT_DISK_BUDGET_BYTES",
      "AGENT_REPLICA_URL",
      "AGENT_TOKEN",
    ]);
  });

  it.each([
    ["AGENT_TOKEN", "short", /at least 16 characters/],
    ["AGENT_CACHE_DIR", "relative/dir", /absolute path/],
    ["AGENT_DISK_BUDGET_BYTES", "lots", /./],
    ["AGENT_REPLICA_URL", "not a url", /./],
  ])("refuses %s=%j", (variable, value, message) => {
    const issues = issuesOf({ ...VALID, [variable]: value });
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(new RegExp(`^${variable}: `));
    expect(issues[0]).toMatch(message);
  });

  it("exits 1 naming AGENT_TOKEN when the agent starts without it", () => {
    const run = spawnSync(process.execPath, [MAIN], {
      cwd: mkdtempSync(join(tmpdir(), "loraplane-agent-config-")),
      env: { PATH: process.env.PATH ?? "", ...VALID, AGENT_TOKEN: "" },
      encoding: "utf8",
      timeout: 20_000,
    });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/AGENT_TOKEN: must be at least 16 characters/);
  });
});
