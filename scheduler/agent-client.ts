import { Agent, request } from "undici";

export type AgentResult<T> =
  | { kind: "ok"; value: T }
  /** The adapter or its files are at fault (rejected by vLLM, digest mismatch, object missing): do not retry. */
  | { kind: "permanent"; code: string; message: string }
  /** The replica, S3 or the agent is unavailable: retry with backoff. */
  | { kind: "transient"; code: string; message: string };

const PERMANENT = new Set([
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

/** The scheduler's side of the replica agent (adapters/agent): load and unload through it. */
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

  load(input: AgentLoadRequest) {
    return this.call<{ path: string; status: string }>("/v1/adapters/load", {
      lora_name: input.loraName,
      object_key: input.objectKey,
      config_object_key: input.configObjectKey,
      sha256: input.sha256,
      size_bytes: input.sizeBytes,
    });
  }

  unload(loraName: string) {
    return this.call<{ unregistered: boolean; files: string }>("/v1/adapters/unload", {
      lora_name: loraName,
    });
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
      let code = `http_${res.statusCode}`;
      let message = text.slice(0, 1000);
      try {
        const parsed = JSON.parse(text) as { error?: { code?: string; message?: string } };
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
