import { createHash, timingSafeEqual } from "node:crypto";
import { Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { z } from "zod";
import type { Logger } from "../../lib/index.ts";
import { AgentError } from "./errors.ts";
import { LoadAdapterBody, UnloadAdapterBody } from "./schema.ts";
import type { ReplicaAgent } from "./service.ts";

export interface AgentAppDeps {
  /** AGENT_TOKEN: every route but /healthz needs `Authorization: Bearer <token>`. */
  token: string;
  agent: ReplicaAgent;
  logger: Logger;
}

/**
 * The agent's HTTP API, called by the scheduler's load/unload jobs:
 * `POST /v1/adapters/load`, `POST /v1/adapters/unload`, `GET /v1/cache`, `GET /healthz`.
 * Errors are `{error: {code, message}}`.
 */
export function createAgentApp(deps: AgentAppDeps): Hono {
  const app = new Hono();
  const expected = digest(deps.token);

  app.get("/healthz", (c) => c.json({ status: "ok" }));

  app.use("*", async (c, next) => {
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+(.+)$/i.exec(header);
    // Digests have one length, so the comparison takes the same time whatever was sent.
    if (!match?.[1] || !timingSafeEqual(digest(match[1]), expected)) {
      throw new AgentError(
        "unauthorized",
        header === "" ? "missing Authorization: Bearer <AGENT_TOKEN>" : "wrong agent token",
      );
    }
    await next();
  });

  app.post("/v1/adapters/load", async (c) => {
    const body = parseBody(LoadAdapterBody, await readJson(c.req.raw));
    return c.json(await deps.agent.load(body), 200);
  });

  app.post("/v1/adapters/unload", async (c) => {
    const body = parseBody(UnloadAdapterBody, await readJson(c.req.raw));
    return c.json(await deps.agent.unload(body.lora_name), 200);
  });

  app.get("/v1/cache", async (c) => c.json(await deps.agent.cacheState(), 200));

  app.notFound((c) =>
    c.json(
      new AgentError("not_found", `no route ${c.req.method} ${new URL(c.req.url).pathname}`).toJSON(),
      404,
    ),
  );

  app.onError((error, c) => {
    if (error instanceof AgentError) {
      if (error.status >= 500) {
        deps.logger.warn({ code: error.code, path: c.req.path }, error.message);
      }
      return c.json(error.toJSON(), statusOf(error));
    }
    deps.logger.error({ err: error, path: c.req.path }, "agent request failed");
    return c.json(new AgentError("internal", "internal error; see the agent's log").toJSON(), 500);
  });

  return app;
}

/** AgentError statuses all come from its own table of 4xx/5xx codes, each of which has a body. */
function statusOf(error: AgentError): ContentfulStatusCode {
  return error.status as ContentfulStatusCode;
}

function digest(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}

async function readJson(req: Request): Promise<unknown> {
  const text = await req.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new AgentError("invalid_request", "the body must be a JSON object");
  }
}

function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const result = schema.safeParse(body);
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join(".") || "body"}: ${i.message}`);
    throw new AgentError("invalid_request", problems.join("; "));
  }
  return result.data;
}
