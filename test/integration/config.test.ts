import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, parseConfig } from "../../lib/env.ts";

const MAIN = resolve(import.meta.dirname, "../../api/main.ts");
const KEY = randomBytes(32).toString("base64");

function startApi(env: Record<string, string>) {
  const cwd = mkdtempSync(join(tmpdir(), "loraplane-config-"));
  return spawnSync(process.execPath, [MAIN], {
    cwd,
    env: { PATH: process.env.PATH ?? "", ...env },
    encoding: "utf8",
    timeout: 20_000,
  });
}

describe("configuration", () => {
  it("exits 1 naming PORT when PORT is not a number", () => {
    const run = startApi({ KEY_ENCRYPTION_KEY: KEY, PORT: "eighty" });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/PORT:/);
  });

  it("exits 1 naming KEY_ENCRYPTION_KEY when it is missing", () => {
    const run = startApi({});
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/KEY_ENCRYPTION_KEY: is required/);
  });

  it("reports every bad variable at once", () => {
    try {
      parseConfig({ KEY_ENCRYPTION_KEY: "short", REDIS_URL: "http://nope", LOG_LEVEL: "loud" });
      expect.unreachable("parseConfig accepted bad values");
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      const names = (error as ConfigError).issues.map((i) => i.variable).sort();
      expect(names).toEqual(["KEY_ENCRYPTION_KEY", "LOG_LEVEL", "REDIS_URL"]);
    }
  });

  it("requires the external issuer's three variables together", () => {
    expect(() =>
      parseConfig({ KEY_ENCRYPTION_KEY: KEY, EXTERNAL_JWT_ISSUER: "https://idp.example" }),
    ).toThrow(/EXTERNAL_JWT_AUDIENCE/);
  });

  it("applies documented defaults", () => {
    const config = parseConfig({ KEY_ENCRYPTION_KEY: KEY });
    expect(config.http).toEqual({
      host: "127.0.0.1",
      port: 8080,
      publicUrl: undefined,
      metricsPort: 9466,
      idleTimeoutMs: 60_000,
    });
    expect(config.auth.keyEncryptionKey).toHaveLength(32);
  });
});
