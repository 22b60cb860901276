import { randomBytes } from "node:crypto";
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { parseEnv } from "node:util";

/**
 * Dev secrets live in a git-ignored env file so that `npm run token` signs with the same keys later.
 * A secret already in the environment is not written; the file, when there is one, is then loaded
 * into `env` (without overriding what is set there).
 */
export function prepareDevEnvFile(file: string, env: NodeJS.ProcessEnv): void {
  const current = existsSync(file) ? readFileSync(file, "utf8") : "";
  const missing: string[] = [];
  if (!/^KEY_ENCRYPTION_KEY=/m.test(current) && !env.KEY_ENCRYPTION_KEY) {
    missing.push(`KEY_ENCRYPTION_KEY=${randomBytes(32).toString("base64")}`);
  }
  if (!/^AGENT_TOKEN=/m.test(current) && !env.AGENT_TOKEN) {
    missing.push(`AGENT_TOKEN=${randomBytes(24).toString("base64url")}`);
  }
  if (missing.length > 0) {
    appendFileSync(
      file,
      `${current && !current.endsWith("\n") ? "\n" : ""}# written by npm start for local development\n${missing.join("\n")}\n`,
    );
  }
  if (existsSync(file)) {
    // parseEnv reads the format process.loadEnvFile does; what the environment sets wins, as there.
    for (const [name, value] of Object.entries(parseEnv(readFileSync(file, "utf8")))) {
      env[name] ??= value;
    }
  }
}
