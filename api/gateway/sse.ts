export interface UsageCounts {
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
}

export interface ClientStreamOptions {
  /** The client asked for `stream_options.include_usage`. */
  includeUsage: boolean;
  /** The client asked for `stream_options.continuous_usage_stats`. */
  continuousUsage: boolean;
}

export function usageFrom(value: unknown): UsageCounts | null {
  if (typeof value !== "object" || value === null) {
    return null;
  }
  const u = value as Record<string, unknown>;
  if (typeof u.prompt_tokens !== "number" || typeof u.completion_tokens !== "number") {
    return null;
  }
  const details = u.prompt_tokens_details as Record<string, unknown> | null | undefined;
  return {
    promptTokens: u.prompt_tokens,
    completionTokens: u.completion_tokens,
    cachedTokens: typeof details?.cached_tokens === "number" ? details.cached_tokens : 0,
  };
}

/** Replaces every replica-side name (the LoRA name) in a message with what the client called the model. */
export function scrubNames(text: string, replicaName: string | null, clientModel: string): string {
  return replicaName ? text.split(replicaName).join(clientModel) : text;
}

export interface SseRewriterHooks {
  /** Every usage the replica reports (cumulative with continuous stats): the last one wins. */
  onUsage: (usage: UsageCounts) => void;
  onFirstToken: () => void;
  onStreamError: (message: string) => void;
}

/**
 * Rewrites vLLM's SSE stream for the client, event by event, as the bytes arrive: the response's
 * `model` becomes the name the client sent, usage the client did not ask for is removed (the
 * gateway always asks the replica for it, to meter cut streams), and replica names never leak.
 */
export function createSseRewriter(
  options: { clientModel: string; replicaName: string | null; wanted: ClientStreamOptions },
  hooks: SseRewriterHooks,
): TransformStream<Uint8Array, Uint8Array> {
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  let buffer = "";
  let sawToken = false;

  const rewriteEvent = (block: string): string | null => {
    const dataLines: string[] = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith("data:")) {
        dataLines.push(line.slice(line[5] === " " ? 6 : 5));
      }
    }
    if (dataLines.length === 0) {
      return `${block}\n\n`;
    }
    const data = dataLines.join("\n");
    if (data === "[DONE]") {
      return "data: [DONE]\n\n";
    }
    let event: Record<string, unknown>;
    try {
      event = JSON.parse(data) as Record<string, unknown>;
    } catch {
      return `data: ${scrubNames(data, options.replicaName, options.clientModel)}\n\n`;
    }
    if (event.error !== undefined) {
      const message = scrubNames(JSON.stringify(event), options.replicaName, options.clientModel);
      hooks.onStreamError(message);
      return `data: ${message}\n\n`;
    }
    if ("model" in event) {
      event.model = options.clientModel;
    }
    const usage = usageFrom(event.usage);
    if (usage) {
      hooks.onUsage(usage);
    }
    const choices = event.choices;
    const isUsageChunk = Array.isArray(choices) && choices.length === 0;
    if (isUsageChunk) {
      if (!options.wanted.includeUsage) {
        return null;
      }
    } else {
      if (!sawToken) {
        sawToken = true;
        hooks.onFirstToken();
      }
      if (event.usage !== undefined && !options.wanted.continuousUsage) {
        delete event.usage;
      }
    }
    return `data: ${JSON.stringify(event)}\n\n`;
  };

  return new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      buffer += decoder.decode(chunk, { stream: true });
      let out = "";
      let boundary = buffer.search(/\r?\n\r?\n/);
      while (boundary !== -1) {
        const block = buffer.slice(0, boundary);
        const sep = /\r?\n\r?\n/.exec(buffer.slice(boundary));
        buffer = buffer.slice(boundary + (sep?.[0].length ?? 2));
        if (block.length > 0) {
          out += rewriteEvent(block) ?? "";
        }
        boundary = buffer.search(/\r?\n\r?\n/);
      }
      if (out.length > 0) {
        controller.enqueue(encoder.encode(out));
      }
    },
    flush(controller) {
      buffer += decoder.decode();
      if (buffer.trim().length > 0) {
        controller.enqueue(encoder.encode(rewriteEvent(buffer.trim()) ?? ""));
      }
    },
  });
}
