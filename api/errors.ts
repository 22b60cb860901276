import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import { AppError, toOpenAIError, toProblem } from "../lib/index.ts";
import type { AppEnv } from "./deps.ts";

const INFERENCE_PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/models"];

/** Inference endpoints answer errors in OpenAI's shape so that OpenAI SDKs show them. */
export function isInferencePath(path: string): boolean {
  return INFERENCE_PATHS.some((prefix) => path === prefix || path.startsWith(`${prefix}/`));
}

function toAppError(error: unknown): AppError {
  if (error instanceof AppError) {
    return error;
  }
  if (error instanceof HTTPException) {
    const status = error.status;
    const message = error.message || "the request could not be processed";
    if (status === 413) {
      return new AppError("PAYLOAD_TOO_LARGE", message);
    }
    if (status === 401) {
      return new AppError("UNAUTHORIZED", message);
    }
    if (status >= 400 && status < 500) {
      return new AppError("VALIDATION", message);
    }
  }
  return new AppError("INTERNAL", "an internal error occurred; the request id identifies it in our logs", {
    cause: error,
  });
}

export function renderError(error: unknown, c: Context<AppEnv>): Response {
  const appError = toAppError(error);
  const requestId = c.get("requestId") ?? "unknown";
  if (appError.code === "INTERNAL") {
    (c.get("logger") ?? c.get("deps").logger).error({ err: error, request_id: requestId }, "unhandled error");
  }
  const headers: Record<string, string> = { "x-request-id": requestId };
  if (appError.retryAfterSeconds !== undefined) {
    headers["retry-after"] = String(Math.max(1, Math.ceil(appError.retryAfterSeconds)));
  }
  if (appError.code === "UNAUTHORIZED") {
    headers["www-authenticate"] = 'Bearer realm="loraplane"';
  }
  if (isInferencePath(c.req.path)) {
    return new Response(JSON.stringify(toOpenAIError(appError)), {
      status: appError.status,
      headers: { ...headers, "content-type": "application/json" },
    });
  }
  return new Response(JSON.stringify(toProblem(appError, requestId)), {
    status: appError.status,
    headers: { ...headers, "content-type": "application/problem+json" },
  });
}
