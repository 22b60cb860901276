import type { Span } from "@opentelemetry/api";
import type { Dispatcher } from "undici";
import type { ServedBy } from "../../../db/index.ts";
import type { EngineDriver, vllm } from "../../../engines/index.ts";

export interface UpstreamTarget {
  /** Null for a fallback upstream. */
  replicaId: string | null;
  /** What `/chat/completions` or `/completions` is appended to: a replica's `<url>/v1`, a fallback's URL. */
  baseUrl: string;
  /** The replica-side LoRA name; null for a base-model request and a fallback. */
  loraName: string | null;
  /** The replica's engine protocol and base model (how it names the adapter); absent for a fallback. */
  engine?: EngineDriver;
  baseModel?: string;
  /** Set for a fallback upstream: the model to ask it for, and its API key. */
  fallback?: { model: string; apiKey: string | null };
}

export interface ForwardOutcome {
  status: "ok" | "error" | "cancelled";
  httpStatus: number;
  usage: vllm.UsageCounts | null;
  /** Usage the upstream did not report (a fallback's stream cut short) and the gateway estimated. */
  usageEstimated?: boolean;
  servedBy: ServedBy;
  replicaId: string | null;
  attempts: number;
  ttftMs: number | null;
  totalMs: number;
  error?: string;
  /**
   * A cancelled request's prompts (by position) that reached `target` but that it reported nothing
   * about (cut before its first chunk, or before its answer): it may have prefilled them, so they are
   * billed, counted by the base's tokenizer.
   */
  unreported?: { target: UpstreamTarget; prompts: number[] };
}

export type FailureReason = "unreachable" | "server_error" | "lost_adapter" | "timeout";

/** The client's request, as the gateway forwards it. */
export interface ForwardRequest {
  path: "/v1/chat/completions" | "/v1/completions";
  body: Record<string, unknown>;
  clientModel: string;
  /**
   * Sent to the upstream as its x-request-id (vLLM names its request after it): the gateway's own
   * unique id, never the client's, which many requests may share.
   */
  upstreamRequestId: string;
  clientSignal: AbortSignal;
  /** The request's span: each attempt gets a child span, propagated to the replica (traceparent). */
  span?: Span;
  /** Choices per prompt (`n`) and prompts of the request, and the base's context window. */
  shape?: { choicesPerPrompt: number; prompts: number; contextTokens: number };
}

/** Where the request may go, best first. */
export interface Upstreams {
  /** Replicas to try, best first; a failure before the first byte moves to the next. */
  targets: readonly UpstreamTarget[];
  /**
   * When every target is gone for this request — it answered that it does not have the adapter
   * (restarted) or refused the connection (died) — fresh targets, after a reload elsewhere if none
   * is left. Asked once per request, and only before any byte went to the client.
   */
  reroute?: () => Promise<UpstreamTarget[]>;
  /**
   * Asked once when no replica target is left (or none was given) before the first byte: the
   * fallback upstream to try; null skips it.
   */
  fallback?: () => Promise<UpstreamTarget | null>;
}

export interface ForwardSettings {
  dispatcher: Dispatcher;
  maxAttempts: number;
  replicaApiKey?: string;
  /** Longest wait for the replica's response headers (queueing included). */
  headersTimeoutMs: number;
  /** Longest silence between two chunks of a response. */
  bodyTimeoutMs: number;
}

/** What the forwarder reports, to one sink, as it goes. */
export type ForwardReport =
  /** A replica failed the request before its first byte (the next target is tried). */
  | { kind: "replica_failed"; replicaId: string; reason: FailureReason; detail: string }
  /**
   * Reported exactly once, when the response has been produced, failed, or was cancelled; the
   * response (or the stream's last bytes) is released only after the sink's promise resolves, so
   * usage is durable first.
   */
  | { kind: "finished"; outcome: ForwardOutcome };

export type ForwardSink = (report: ForwardReport) => Promise<void> | void;

export interface ForwardOptions {
  request: ForwardRequest;
  upstreams: Upstreams;
  settings: ForwardSettings;
  report: ForwardSink;
}
