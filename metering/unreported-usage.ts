import type { Dispatcher } from "undici";
import { ENGINE_DRIVERS, type EngineDriver, type vllm } from "../engines/index.ts";
import type { CompletionKind } from "./estimates.ts";
import { estimatePromptTokens } from "./prompt-tokens.ts";

/**
 * Usage an upstream did not report, estimated so that it is still billed: a fallback's answer
 * without usage, and the prompts of a cancelled request that its replica may have prefilled.
 */

/** A replica that does not answer /tokenize this fast is not waited for: the local count is close. */
const TOKENIZE_TIMEOUT_MS = 2_000;

/** What a finished request reports that billing reads. */
export interface MeteredOutcome {
  status: "ok" | "error" | "cancelled";
  usage: vllm.UsageCounts | null;
  usageEstimated?: boolean;
  /** A cancelled request's prompts (by position) that reached `target` and that it never reported. */
  unreported?: {
    target: { replicaId: string | null; baseUrl: string; loraName: string | null; engine?: EngineDriver };
    prompts: number[];
  };
}

/** The request as the estimates need it: its kind, body, and the base's context window. */
export interface EstimatedRequest {
  kind: CompletionKind;
  body: Record<string, unknown>;
  contextTokens: number;
}

/**
 * The usage to bill for an answer: what the upstream reported; when a fallback reported none, the
 * prompt as the tokenizer counts it and `completionTokens()` (replicas always report usage, so
 * theirs is never estimated here).
 */
export async function usageToBill(
  reported: vllm.UsageCounts | null,
  fromFallback: boolean,
  request: EstimatedRequest,
  completionTokens: () => number,
): Promise<Pick<MeteredOutcome, "usage" | "usageEstimated">> {
  if (reported !== null || !fromFallback) {
    return { usage: reported };
  }
  const prompts = await estimatePromptTokens(request.kind, request.body, request.contextTokens);
  return {
    usage: {
      promptTokens: prompts.reduce((a, b) => a + b, 0),
      completionTokens: completionTokens(),
      cachedTokens: 0,
    },
    usageEstimated: true,
  };
}

/** A complete answer's generated text in tokens, at about 4 characters a token. */
export function contentTokens(text: string): number {
  try {
    const choices = (JSON.parse(text) as { choices?: { message?: { content?: unknown }; text?: unknown }[] })
      .choices;
    const chars = (choices ?? []).reduce((n, choice) => {
      const content = choice.message?.content ?? choice.text;
      return n + (typeof content === "string" ? content.length : 0);
    }, 0);
    return Math.ceil(chars / 4);
  } catch {
    return 0;
  }
}

/**
 * Prompt tokens of a cancelled request that its upstream may have prefilled but never reported:
 * counted by the replica itself (`POST /tokenize`, the base's own tokenizer and chat template) for
 * one prompt, else by the local BPE estimate. Returns the usage to bill, and whether it is estimated.
 */
export async function billUnreportedPrompts<T extends MeteredOutcome>(
  outcome: T,
  request: EstimatedRequest & { dispatcher: Dispatcher },
): Promise<T> {
  const unreported = outcome.unreported;
  if (outcome.status !== "cancelled" || !unreported || unreported.prompts.length === 0) {
    return outcome;
  }
  let tokens: number | null = null;
  const { target } = unreported;
  if (target.replicaId !== null && unreported.prompts.length === 1) {
    tokens = await tokenizeOnReplica(
      target.engine ?? ENGINE_DRIVERS.vllm,
      target.baseUrl,
      target.loraName,
      request,
    );
  }
  const estimated = tokens === null;
  if (tokens === null) {
    const perPrompt = await estimatePromptTokens(request.kind, request.body, request.contextTokens);
    tokens = unreported.prompts.reduce((n, i) => n + (perPrompt[i] ?? 0), 0);
  }
  const usage = outcome.usage ?? { promptTokens: 0, completionTokens: 0, cachedTokens: 0 };
  return {
    ...outcome,
    usage: { ...usage, promptTokens: usage.promptTokens + tokens },
    usageEstimated: (outcome.usageEstimated ?? false) || estimated,
  };
}

async function tokenizeOnReplica(
  engine: EngineDriver,
  baseUrl: string,
  loraName: string | null,
  request: EstimatedRequest & { dispatcher: Dispatcher },
): Promise<number | null> {
  const { body } = request;
  const prompt = Array.isArray(body.prompt) && body.prompt.length === 1 ? body.prompt[0] : body.prompt;
  if (request.kind === "completion" && typeof prompt !== "string") {
    return null; // token ids (counted by the estimate exactly) or a batch
  }
  const client = engine.createReplicaClient({
    baseUrl: baseUrl.replace(/\/v1\/?$/, ""),
    dispatcher: request.dispatcher,
    timeoutMs: TOKENIZE_TIMEOUT_MS,
  });
  const model = loraName ?? undefined;
  const result = await client.tokenize(
    request.kind === "chat"
      ? {
          messages: body.messages as { role: string; content: string }[],
          ...(model && { model }),
          ...(typeof body.add_generation_prompt === "boolean" && {
            addGenerationPrompt: body.add_generation_prompt,
          }),
        }
      : { prompt: prompt as string, ...(model && { model }) },
  );
  return result.kind === "ok" ? Math.min(result.value.count, request.contextTokens) : null;
}
