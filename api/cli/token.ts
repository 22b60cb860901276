import { parseArgs } from "node:util";
import { createDbHandle, getTenant } from "../../db/index.ts";
import { loadConfig } from "../../lib/index.ts";
import { KeyRing } from "../auth/key-ring.ts";
import { OPERATOR_ONLY_SCOPES, OPERATOR_SCOPES, ScopeString, TENANT_SCOPES } from "../auth/scopes.ts";
import { prepareDatabase } from "../runtime.ts";

const USAGE = `usage:
  npm run token -- --admin [--ttl <seconds>]
  npm run token -- --agent [--ttl <seconds>]      (a replica agent's: it may only register replicas)
  npm run token -- --tenant <id> [--scope "<scopes>"] [--ttl <seconds>]
  npm run token -- --rotate
Prints the token (or, with --rotate, the new key id) alone on stdout.`;

function fail(message: string): never {
  process.stderr.write(`${message}\n\n${USAGE}\n`);
  process.exit(2);
}

let args: ReturnType<typeof parse>;
function parse() {
  return parseArgs({
    options: {
      admin: { type: "boolean", default: false },
      agent: { type: "boolean", default: false },
      tenant: { type: "string" },
      scope: { type: "string" },
      ttl: { type: "string" },
      rotate: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
    strict: true,
  });
}
try {
  args = parse();
} catch (error) {
  fail(error instanceof Error ? error.message : String(error));
}
const { values } = args;
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const modes = [values.admin, values.agent, values.tenant !== undefined, values.rotate].filter(Boolean).length;
if (modes !== 1) {
  fail("give exactly one of --admin, --agent, --tenant <id> or --rotate");
}

const config = loadConfig();
const ttlSeconds = values.ttl === undefined ? config.auth.defaultTtlSeconds : Number(values.ttl);
if (!Number.isInteger(ttlSeconds) || ttlSeconds < 60 || ttlSeconds > config.auth.maxTtlSeconds) {
  fail(`--ttl must be a whole number of seconds between 60 and ${config.auth.maxTtlSeconds}`);
}

await prepareDatabase(config);
const handle = createDbHandle({ url: config.db.url, poolSize: 1 });
try {
  const keyRing = await new KeyRing(handle.db, config.auth).init();
  if (values.rotate) {
    process.stdout.write(`${await keyRing.rotate()}\n`);
  } else if (values.admin) {
    const signed = await keyRing.sign({
      subject: "operator:cli",
      tenantId: null,
      scopes: [...OPERATOR_SCOPES],
      ttlSeconds,
    });
    process.stdout.write(`${signed.token}\n`);
  } else if (values.agent) {
    const signed = await keyRing.sign({
      subject: "agent:cli",
      tenantId: null,
      scopes: ["replicas:register"],
      ttlSeconds,
    });
    process.stdout.write(`${signed.token}\n`);
  } else {
    const tenantId = values.tenant ?? "";
    const parsed = ScopeString.safeParse(values.scope ?? TENANT_SCOPES.join(" "));
    if (!parsed.success) {
      fail(`--scope: ${parsed.error.issues.map((i) => i.message).join("; ")}`);
    }
    const operatorOnly = parsed.data.filter((s) => OPERATOR_ONLY_SCOPES.includes(s));
    if (operatorOnly.length > 0) {
      fail(`--scope: a tenant token cannot carry '${operatorOnly.join("', '")}' (see --admin, --agent)`);
    }
    if (!(await getTenant(handle.db, tenantId))) {
      fail(`--tenant: no tenant has the id '${tenantId}'`);
    }
    const signed = await keyRing.sign({
      subject: `tenant:${tenantId}`,
      tenantId,
      scopes: parsed.data,
      ttlSeconds,
    });
    process.stdout.write(`${signed.token}\n`);
  }
} finally {
  await handle.close();
}
