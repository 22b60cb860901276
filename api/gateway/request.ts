import type { BaseModelRow, FallbackUpstream, ResolvedAdapterVersion, TenantRow } from "../../db/index.ts";
import type { CompletionKind, CostBounds, Prices, Reservation } from "../../metering/index.ts";
import type { ForwardOutcome } from "./forward/types.ts";

/**
 * What an inference request is at each phase of serve-completion.ts: read (InferenceRequest),
 * resolved (ResolvedRequest), admitted (Admission), settled (SettledRequest). Phases and hooks
 * added later (a canary split, a routing rule, a shadow copy, a request log) read these.
 */

export type CompletionPath = "/v1/chat/completions" | "/v1/completions";

/** The client's request, read and checked. */
export interface InferenceRequest {
  path: CompletionPath;
  kind: CompletionKind;
  body: Record<string, unknown>;
  bodyBytes: number;
  /** The model name the client asked for. */
  requested: string;
  /** The response's x-request-id: a correlation label (a client's own may be shared by many requests). */
  requestId: string;
  /** The billing identity: ours, unique per request, whatever the client sends. */
  usageId: string;
}

/** What the request's `model` names for its tenant, and what it can cost there. */
export interface ResolvedRequest {
  adapter: ResolvedAdapterVersion | null;
  /** The adapter version; null for a base model. */
  versionId: string | null;
  baseModelId: string;
  base: BaseModelRow | undefined;
  /** The base's prices; null when it has none (nothing is billed). */
  prices: Prices | null;
  /** The longest sequence the replicas serve (or the base's own window): what bounds the cost. */
  contextTokens: number;
  bounds: CostBounds;
}

/** The budget reserved for the request, and the fallback it may use. */
export interface Admission {
  reservation: Reservation | null;
  /** Null when the tenant and base have none, or the budget cannot cover it. */
  fallback: FallbackUpstream | null;
}

/** A request that has been answered (or failed, or was cancelled), its usage durable. */
export interface SettledRequest {
  tenant: TenantRow;
  request: InferenceRequest;
  model: ResolvedRequest;
  outcome: ForwardOutcome;
}

/**
 * Told of every settled request after its usage is durable, off the response's path (errors are
 * logged): where a request log or a shadow copy to a frontier model attaches.
 */
export type SettledHook = (settled: SettledRequest) => void | Promise<void>;
