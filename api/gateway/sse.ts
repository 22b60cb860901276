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

/** The response's first `"model"` field: the top-level one (vLLM writes it before `choices`). */
export const MODEL_FIELD = /"model":"(?:[^"\\]|\\.)*"/;
/** The `usage` field: null, or an object with at most one nested object (`prompt_tokens_details`). */
const USAGE_FIELD = /"usage":(null|\{(?:[^{}]|\{[^{}]*\})*\})/;

function removeField(json: string, match: RegExpExecArray): string {
  const start = match.index;
  const end = start + match[0].length;
  if (json[start - 1] === ",") {
    return json.slice(0, start - 1) + json.slice(end);
  }
  return json.slice(0, start) + json.slice(json[end] === "," ? end + 1 : end);
}

/** Usage from a complete (non-streamed) response body, without parsing the whole body. */
export function usageFromBody(text: string): UsageCounts | null {
  const match = USAGE_FIELD.exec(text);
  return match?.[1] && match[1] !== "null" ? usageFrom(JSON.parse(match[1])) : null;
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

  const modelField = `"model":${JSON.stringify(options.clientModel)}`;
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
    if (data.startsWith('{"error"')) {
      const message = scrubNames(data, options.replicaName, options.clientModel);
      hooks.onStreamError(message);
      return `data: ${message}\n\n`;
    }
    // String edits, not JSON.parse + stringify per chunk: inside JSON strings every quote is escaped,
    // so these patterns can only match the chunk's own top-level fields.
    let out = data.replace(MODEL_FIELD, modelField);
    const usageField = USAGE_FIELD.exec(out);
    if (usageField?.[1] && usageField[1] !== "null") {
      const usage = usageFrom(JSON.parse(usageField[1]));
      if (usage) {
        hooks.onUsage(usage);
      }
    }
    if (out.includes('"choices":[]')) {
      return options.wanted.includeUsage ? `data: ${out}\n\n` : null;
    }
    if (!sawToken) {
      sawToken = true;
      hooks.onFirstToken();
    }
    if (usageField && !options.wanted.continuousUsage) {
      out = removeField(out, usageField);
    }
    return `data: ${out}\n\n`;
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
