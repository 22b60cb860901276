import { Agent, request } from "undici";
import type { AgentErrorCode } from "./errors.ts";
import type {
  LoadAdapterBody,
  LoadAdapterResponse,
  UnloadAdapterBody,
  UnloadAdapterResponse,
} from "./schema.ts";

/** What went wrong with a call, besides the agent's own codes: no answer, or an answer not the agent's. */
export type AgentCallCode = AgentErrorCode | "agent_unreachable" | `http_${number}`;

export type AgentResult<T> =
  | { kind: "ok"; value: T }
  /** The adapter or its files are at fault (rejected by vLLM, digest mismatch, object missing): do not retry. */
  | { kind: "permanent"; code: AgentCallCode; message: string }
  /** The replica, S3 or the agent is unavailable: retry with backoff. */
  | { kind: "transient"; code: AgentCallCode; message: string };

/** The agent's codes that no retry can change: the same files would be refused again. */
const PERMANENT: ReadonlySet<AgentCallCode> = new Set<AgentErrorCode>([
  "adapter_rejected",
  "digest_mismatch",
  "object_missing",
  "invalid_request",
  "name_conflict",
]);

export interface AgentLoadRequest {
  loraName: string;
  objectKey: string;
  configObjectKey: string;
  sha256: string;
  sizeBytes: number;
}

/** The scheduler's side of the replica agent: load and unload through it, over its HTTP API. */
export class AgentClient {
  private readonly dispatcher = new Agent({ keepAliveTimeout: 4_000, keepAliveMaxTimeout: 4_000 });
  private readonly baseUrl: string;
  private readonly token: string;
  private readonly timeoutMs: number;

  constructor(options: { baseUrl: string; token: string; timeoutMs: number }) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.token = options.token;
    this.timeoutMs = options.timeoutMs;
  }

  load(input: AgentLoadRequest): Promise<AgentResult<LoadAdapterResponse>> {
    const body: LoadAdapterBody = {
      lora_name: input.loraName,
      object_key: input.objectKey,
      config_object_key: input.configObjectKey,
      sha256: input.sha256,
      size_bytes: input.sizeBytes,
    };
    return this.call("/v1/adapters/load", body);
  }

  unload(loraName: string): Promise<AgentResult<UnloadAdapterResponse>> {
    const body: UnloadAdapterBody = { lora_name: loraName };
    return this.call("/v1/adapters/unload", body);
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  private async call<T>(path: string, body: unknown): Promise<AgentResult<T>> {
    try {
      const res = await request(`${this.baseUrl}${path}`, {
        method: "POST",
        dispatcher: this.dispatcher,
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
        headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      const text = await res.body.text();
      if (res.statusCode < 300) {
        return { kind: "ok", value: JSON.parse(text) as T };
      }
      let code: AgentCallCode = `http_${res.statusCode}`;
      let message = text.slice(0, 1000);
      try {
        const parsed = JSON.parse(text) as { error?: { code?: AgentErrorCode; message?: string } };
        code = parsed.error?.code ?? code;
        message = parsed.error?.message ?? message;
      } catch {
        // not the agent's JSON: keep the raw text
      }
      return { kind: PERMANENT.has(code) ? "permanent" : "transient", code, message };
    } catch (error) {
      return {
        kind: "transient",
        code: "agent_unreachable",
        message: `${this.baseUrl}: ${(error as Error).message}`,
      };
    }
  }
}
