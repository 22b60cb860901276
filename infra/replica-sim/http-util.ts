import type { Context } from "hono";

/** Writes JSON exactly as given (FastAPI's JSONResponse), with any status. */
export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

export interface ErrorStyle {
  /** Replicas older than 2025-08 answer `{"object":"error","message",…}`. */
  legacy: boolean;
}

/** vLLM's ErrorResponse: `{"error":{"message","type","param","code"}}` (or the legacy flat shape). */
export function errorResponse(
  style: ErrorStyle,
  status: number,
  message: string,
  type: string,
  param: string | null = null,
): Response {
  const body = style.legacy
    ? { object: "error", message, type, param, code: status }
    : { error: { message, type, param, code: status } };
  return json(body, status);
}

/** FastAPI's own 404/405 for routes it does not have. */
export function detail(status: 404 | 405, text: "Not Found" | "Method Not Allowed"): Response {
  return json({ detail: text }, status);
}

interface ValidationIssue {
  type: string;
  loc: readonly (string | number)[];
  msg: string;
}

function pyTuple(loc: readonly (string | number)[]): string {
  const parts = loc.map((p) => (typeof p === "number" ? String(p) : `'${p}'`));
  return parts.length === 1 ? `(${parts[0]},)` : `(${parts.join(", ")})`;
}

/** RequestValidationError as vLLM renders it: 400, type "Bad Request", param from the error's loc. */
export function validationError(
  style: ErrorStyle,
  issue: ValidationIssue | string,
  param?: string | null,
): Response {
  if (typeof issue === "string") {
    return errorResponse(style, 400, `1 validation error:\n  ${issue}`, "Bad Request", param ?? null);
  }
  const text = `{'type': '${issue.type}', 'loc': ${pyTuple(issue.loc)}, 'msg': '${issue.msg}'}`;
  return errorResponse(
    style,
    400,
    `1 validation error:\n  ${text}`,
    "Bad Request",
    param ?? issue.loc.join("."),
  );
}

export type JsonBody = Record<string, unknown>;

/**
 * vLLM's `validate_json_request` then FastAPI's body parsing: the media type must be
 * application/json (400, not 415), the body valid JSON and an object.
 */
export async function readJsonBody(
  c: Context,
  style: ErrorStyle,
): Promise<{ ok: true; body: JsonBody } | { ok: false; res: Response }> {
  const mediaType = (c.req.header("content-type") ?? "").toLowerCase().split(";")[0]?.trim() ?? "";
  if (mediaType !== "application/json") {
    return {
      ok: false,
      res: validationError(style, "Unsupported Media Type: Only 'application/json' is allowed", null),
    };
  }
  const text = await c.req.text();
  if (text.trim() === "") {
    return {
      ok: false,
      res: validationError(style, { type: "missing", loc: ["body"], msg: "Field required" }),
    };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    const m = /position (\d+)/.exec(err instanceof Error ? err.message : "");
    const pos = m?.[1] ? Number(m[1]) : 0;
    return {
      ok: false,
      res: validationError(style, { type: "json_invalid", loc: ["body", pos], msg: "JSON decode error" }),
    };
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return {
      ok: false,
      res: validationError(style, {
        type: "model_attributes_type",
        loc: ["body"],
        msg: "Input should be a valid dictionary or object to extract fields from",
      }),
    };
  }
  return { ok: true, body: parsed as JsonBody };
}

export type FieldCheck<T> = { ok: true; value: T } | { ok: false; res: Response };

/** Optional string field (null counts as absent), else a 400 `string_type` error. */
export function optString(style: ErrorStyle, body: JsonBody, key: string): FieldCheck<string | undefined> {
  const v = body[key];
  if (v === undefined || v === null) {
    return { ok: true, value: undefined };
  }
  if (typeof v !== "string") {
    return {
      ok: false,
      res: validationError(style, {
        type: "string_type",
        loc: ["body", key],
        msg: "Input should be a valid string",
      }),
    };
  }
  return { ok: true, value: v };
}

export function optInt(style: ErrorStyle, body: JsonBody, key: string): FieldCheck<number | undefined> {
  const v = body[key];
  if (v === undefined || v === null) {
    return { ok: true, value: undefined };
  }
  if (typeof v !== "number" || !Number.isInteger(v)) {
    return {
      ok: false,
      res: validationError(style, {
        type: "int_type",
        loc: ["body", key],
        msg: "Input should be a valid integer",
      }),
    };
  }
  return { ok: true, value: v };
}

export function optBool(style: ErrorStyle, body: JsonBody, key: string): FieldCheck<boolean | undefined> {
  const v = body[key];
  if (v === undefined || v === null) {
    return { ok: true, value: undefined };
  }
  if (typeof v !== "boolean") {
    return {
      ok: false,
      res: validationError(style, {
        type: "bool_type",
        loc: ["body", key],
        msg: "Input should be a valid boolean",
      }),
    };
  }
  return { ok: true, value: v };
}
