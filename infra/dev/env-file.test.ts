import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { prepareDevEnvFile } from "./env-file.ts";

const dirs: string[] = [];
function scratchFile(): string {
  const dir = mkdtempSync(join(tmpdir(), "loraplane-env-file-"));
  dirs.push(dir);
  return join(dir, ".env");
}
afterEach(() => {
  for (const dir of dirs.splice(0)) {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe("npm start's dev env file", () => {
  it("writes no file and does not fail when the environment already has every secret", () => {
    const file = scratchFile();
    const env: NodeJS.ProcessEnv = { KEY_ENCRYPTION_KEY: "from-env", AGENT_TOKEN: "from-env-too" };
    expect(() => prepareDevEnvFile(file, env)).not.toThrow();
    expect(existsSync(file)).toBe(false);
    expect(env).toEqual({ KEY_ENCRYPTION_KEY: "from-env", AGENT_TOKEN: "from-env-too" });
  });

  it("writes the missing secrets once and loads them, keeping what the environment sets", () => {
    const file = scratchFile();
    writeFileSync(file, "DATABASE_URL=postgres://from-file\nPORT=1234");
    const env: NodeJS.ProcessEnv = { PORT: "8080" };
    prepareDevEnvFile(file, env);
    const written = readFileSync(file, "utf8");
    expect(written).toMatch(/^KEY_ENCRYPTION_KEY=\S{44}$/m);
    expect(written).toMatch(/^AGENT_TOKEN=\S{32}$/m);
    expect(env.DATABASE_URL).toBe("postgres://from-file");
    expect(env.PORT).toBe("8080");
    expect(env.KEY_ENCRYPTION_KEY).toBe(/^KEY_ENCRYPTION_KEY=(\S+)$/m.exec(written)?.[1]);

    // A second start keeps the same keys: tokens signed before still verify.
    const again: NodeJS.ProcessEnv = {};
    prepareDevEnvFile(file, again);
    expect(readFileSync(file, "utf8")).toBe(written);
    expect(again.KEY_ENCRYPTION_KEY).toBe(env.KEY_ENCRYPTION_KEY);
  });
});
