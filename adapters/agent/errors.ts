/**
 * The agent's error model: `{error: {code, message}}` with the HTTP status beside it. Codes are
 * what the scheduler branches on; messages name the adapter, key or limit at fault.
 */
export type AgentErrorCode =
  | "unauthorized"
  | "invalid_request"
  | "not_found"
  | "name_conflict"
  | "object_missing"
  | "digest_mismatch"
  | "adapter_rejected"
  | "insufficient_storage"
  | "storage_unavailable"
  | "replica_unreachable"
  | "replica_error"
  | "internal";

const STATUS: Record<AgentErrorCode, number> = {
  unauthorized: 401,
  invalid_request: 400,
  not_found: 404,
  name_conflict: 409,
  object_missing: 422,
  digest_mismatch: 422,
  adapter_rejected: 422,
  insufficient_storage: 507,
  storage_unavailable: 502,
  replica_unreachable: 502,
  replica_error: 502,
  internal: 500,
};

export class AgentError extends Error {
  readonly code: AgentErrorCode;

  constructor(code: AgentErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AgentError";
    this.code = code;
  }

  get status(): number {
    return STATUS[this.code];
  }

  toJSON(): { error: { code: AgentErrorCode; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}
