import type { MiddlewareHandler } from "hono";
import { bodyLimit as streamingBodyLimit } from "hono/body-limit";
import { AppError } from "../../lib/index.ts";
import type { AppEnv } from "../deps.ts";

/**
 * Refuses request bodies over `maxBytes` with 413. A body that declares its length is judged by
 * its header alone (Node enforces that the body matches it); only a chunked body is counted as it
 * streams, by Hono's middleware. Hono's middleware used for every request would materialise a
 * fetch Request around the Node request on the hot path, just to ask whether it has a body.
 */
export function bodyLimit(maxBytes: number): MiddlewareHandler<AppEnv> {
  const tooLarge = (): never => {
    throw new AppError("PAYLOAD_TOO_LARGE", `the request body is larger than ${maxBytes} bytes`);
  };
  const counting = streamingBodyLimit({ maxSize: maxBytes, onError: tooLarge });
  return (c, next) => {
    const method = c.req.method;
    if (method === "GET" || method === "HEAD") {
      return next();
    }
    const declared = c.req.header("content-length");
    if (declared !== undefined && c.req.header("transfer-encoding") === undefined) {
      return Number(declared) > maxBytes ? tooLarge() : next();
    }
    return counting(c, next);
  };
}
