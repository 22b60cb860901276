export type ErrorCode =
  | "NOT_FOUND"
  | "CONFLICT"
  | "FORBIDDEN"
  | "UNAUTHORIZED"
  | "VALIDATION"
  | "UNPROCESSABLE"
  | "PAYLOAD_TOO_LARGE"
  | "RATE_LIMITED"
  | "QUOTA_EXCEEDED"
  | "PRECONDITION_FAILED"
  | "UNAVAILABLE"
  | "INTERNAL";

export interface FieldProblem {
  path: string;
  message: string;
}

export interface AppErrorOptions {
  errors?: FieldProblem[];
  /** A more specific machine-readable reason than the code, e.g. `budget_exceeded`. */
  reason?: string;
  retryAfterSeconds?: number;
  cause?: unknown;
}

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly errors: FieldProblem[] | undefined;
  readonly reason: string | undefined;
  readonly retryAfterSeconds: number | undefined;

  constructor(code: ErrorCode, message: string, options: AppErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "AppError";
    this.code = code;
    this.errors = options.errors;
    this.reason = options.reason;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }

  get status(): number {
    return codeToStatus(this.code);
  }
}

export class NotFoundError extends AppError {
  constructor(kind: string, id: string) {
    super("NOT_FOUND", `${kind} '${id}' does not exist`);
  }
}

export class ConflictError extends AppError {
  constructor(message: string) {
    super("CONFLICT", message);
  }
}

export class UnauthorizedError extends AppError {
  constructor(message: string) {
    super("UNAUTHORIZED", message);
  }
}

export class ForbiddenError extends AppError {
  constructor(message: string) {
    super("FORBIDDEN", message);
  }
}

export class ValidationError extends AppError {
  constructor(message: string, errors: FieldProblem[]) {
    super("VALIDATION", message, { errors });
  }
}

export function codeToStatus(code: ErrorCode): number {
  switch (code) {
    case "NOT_FOUND":
      return 404;
    case "CONFLICT":
      return 409;
    case "FORBIDDEN":
      return 403;
    case "UNAUTHORIZED":
      return 401;
    case "VALIDATION":
      return 400;
    case "UNPROCESSABLE":
      return 422;
    case "PAYLOAD_TOO_LARGE":
      return 413;
    case "RATE_LIMITED":
    case "QUOTA_EXCEEDED":
      return 429;
    case "PRECONDITION_FAILED":
      return 412;
    case "UNAVAILABLE":
      return 503;
    case "INTERNAL":
      return 500;
  }
}

const TITLES: Record<ErrorCode, string> = {
  NOT_FOUND: "Not Found",
  CONFLICT: "Conflict",
  FORBIDDEN: "Forbidden",
  UNAUTHORIZED: "Unauthorized",
  VALIDATION: "Invalid Request",
  UNPROCESSABLE: "Unprocessable Content",
  PAYLOAD_TOO_LARGE: "Payload Too Large",
  RATE_LIMITED: "Too Many Requests",
  QUOTA_EXCEEDED: "Quota Exceeded",
  PRECONDITION_FAILED: "Precondition Failed",
  UNAVAILABLE: "Service Unavailable",
  INTERNAL: "Internal Server Error",
};

export interface ProblemDocument {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  request_id: string;
  errors?: FieldProblem[];
}

/** RFC 9457 problem document, the error shape of every management endpoint. */
export function toProblem(error: AppError, requestId: string): ProblemDocument {
  const code = error.reason ?? error.code.toLowerCase();
  const problem: ProblemDocument = {
    type: `https://loraplane.dev/problems/${code.replaceAll("_", "-")}`,
    title: TITLES[error.code],
    status: error.status,
    detail: error.message,
    code,
    request_id: requestId,
  };
  if (error.errors && error.errors.length > 0) {
    problem.errors = error.errors;
  }
  return problem;
}

export interface OpenAIErrorDocument {
  error: { message: string; type: string; param: string | null; code: string | null };
}

const OPENAI_TYPES: Record<ErrorCode, string> = {
  NOT_FOUND: "NotFoundError",
  CONFLICT: "invalid_request_error",
  FORBIDDEN: "permission_error",
  UNAUTHORIZED: "authentication_error",
  VALIDATION: "invalid_request_error",
  UNPROCESSABLE: "invalid_request_error",
  PAYLOAD_TOO_LARGE: "invalid_request_error",
  RATE_LIMITED: "rate_limit_error",
  QUOTA_EXCEEDED: "insufficient_quota",
  PRECONDITION_FAILED: "invalid_request_error",
  UNAVAILABLE: "service_unavailable",
  INTERNAL: "server_error",
};

/** The OpenAI error shape, used on inference paths so that OpenAI SDKs surface the message. */
export function toOpenAIError(error: AppError, param: string | null = null): OpenAIErrorDocument {
  return {
    error: {
      message: error.message,
      type: OPENAI_TYPES[error.code],
      param: param ?? error.errors?.[0]?.path ?? null,
      code: error.reason ?? error.code.toLowerCase(),
    },
  };
}
