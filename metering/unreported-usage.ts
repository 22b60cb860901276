import type { Dispatcher } from "undici";
import { vllm } from "../../engines/index.ts";
import type { CompletionKind } from "../../metering/estimates.ts";
import { estimatePromptTokens } from "../../metering/prompt-tokens.ts";
import type { ProxyOutcome } from "./proxy.ts";

/** A replica that does not answer /tokenize this fast is not waited for: the local count is close. */
const TOKENIZE_TIMEOUT_MS = 2_000;

/**
 * Prompt tokens of a cancelled request that its upstream may have prefilled but never reported:
 * counted by the replica itself (`POST /tokenize`, the base's own tokenizer and chat template) for
 * one prompt, else by the local BPE estimate. Returns the usage to bill, and whether it is estimated.
 */
export async function billUnreportedPrompts<T extends Omit<ProxyOutcome, "totalMs">>(
  outcome: T,
  request: {
    kind: CompletionKind;
    body: Record<string, unknown>;
    contextTokens: number;
    dispatcher: Dispatcher;
  },
): Promise<T> {
  const unreported = outcome.unreported;
  if (outcome.status !== "cancelled" || !unreported || unreported.prompts.length === 0) {
    return outcome;
  }
  let tokens: number | null = null;
  const { target } = unreported;
  if (target.replicaId !== null && unreported.prompts.length === 1) {
    tokens = await tokenizeOnReplica(target.baseUrl, target.loraName, request);
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
  baseUrl: string,
  loraName: string | null,
  request: {
    kind: CompletionKind;
    body: Record<string, unknown>;
    contextTokens: number;
    dispatcher: Dispatcher;
  },
): Promise<number | null> {
  const { body } = request;
  const prompt = Array.isArray(body.prompt) && body.prompt.length === 1 ? body.prompt[0] : body.prompt;
  if (request.kind === "completion" && typeof prompt !== "string") {
    return null; // token ids (counted by the estimate exactly) or a batch
  }
  const client = vllm.createReplicaClient({
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
