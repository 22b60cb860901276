import type { EstimatedRequest } from "../../../metering/index.ts";
import { DEFAULT_CONTEXT_TOKENS } from "../../../metering/index.ts";
import { startUpstreamSpan, type UpstreamSpan } from "../tracing.ts";
import type {
  FailureReason,
  ForwardOptions,
  ForwardOutcome,
  ForwardRequest,
  ForwardSettings,
  ForwardSink,
  UpstreamTarget,
} from "./types.ts";

/**
 * One forwarded request's state, shared by its attempts and by whichever answer it gets (JSON,
 * stream or error): the client's signal, the upstream abort, the attempt count and span, and the
 * one outcome it reports.
 */
export class Exchange {
  readonly request: ForwardRequest;
  readonly settings: ForwardSettings;
  readonly started = performance.now();
  /** Aborts the upstream call: the client went away, or its stream was cancelled. */
  readonly upstreamAbort = new AbortController();
  attempts = 0;
  private readonly sink: ForwardSink;
  private finished: Promise<void> | null = null;
  private upstreamSpan: UpstreamSpan | null = null;
  private readonly onClientGone = () => this.upstreamAbort.abort(this.request.clientSignal.reason);

  constructor(options: ForwardOptions) {
    this.request = options.request;
    this.settings = options.settings;
    this.sink = options.report;
    this.request.clientSignal.addEventListener("abort", this.onClientGone, { once: true });
  }

  get clientGone(): boolean {
    return this.request.clientSignal.aborted;
  }

  /** The answer is settled one way or another: the client's leaving no longer aborts the upstream here. */
  detachClient(): void {
    this.request.clientSignal.removeEventListener("abort", this.onClientGone);
  }

  /** Counts an attempt at `target` and opens its span; returns the trace headers to send it. */
  startAttempt(target: UpstreamTarget): Record<string, string> {
    this.attempts++;
    this.upstreamSpan = startUpstreamSpan(this.request.span, target, this.attempts);
    return this.upstreamSpan.headers;
  }

  /**
   * The attempt failed before its first byte (`error` ends its span); a replica's failure is reported
   * with `detail` (the next target is tried).
   */
  failAttempt(
    target: UpstreamTarget,
    failure: { status: number | null; reason: FailureReason; error: string; detail?: string },
  ): void {
    const { status, reason, error, detail = error } = failure;
    this.upstreamSpan?.end(status, error);
    this.upstreamSpan = null;
    if (target.replicaId !== null) {
      void (async () =>
        this.sink({ kind: "replica_failed", replicaId: target.replicaId as string, reason, detail }))().catch(
        () => {},
      );
    }
  }

  /** Reports the outcome once; later calls get the first report's promise. */
  finish(outcome: Omit<ForwardOutcome, "totalMs">): Promise<void> {
    if (this.finished === null) {
      this.upstreamSpan?.end(outcome.httpStatus, outcome.status === "error" ? outcome.error : undefined);
      this.upstreamSpan = null;
      const totalMs = performance.now() - this.started;
      this.finished = (async () => this.sink({ kind: "finished", outcome: { ...outcome, totalMs } }))();
    }
    return this.finished;
  }

  /** The request as usage estimates read it (an upstream that reported no usage). */
  estimated(): EstimatedRequest {
    const { path, body, shape } = this.request;
    return {
      kind: path === "/v1/chat/completions" ? "chat" : "completion",
      body,
      contextTokens: shape?.contextTokens ?? DEFAULT_CONTEXT_TOKENS,
    };
  }

  /** Milliseconds since the request was forwarded. */
  elapsed(): number {
    return performance.now() - this.started;
  }
}
