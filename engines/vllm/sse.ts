import { StringDecoder } from "node:string_decoder";

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

const isCount = (value: unknown): value is number =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= 0;

export function usageFrom(value: unknown): UsageCounts | null {
  if (typeof value !== "object" || value === null) {
    return null;
  }
  const u = value as Record<string, unknown>;
  // Token counts become money: only whole, non-negative counts are believed (a fallback is a third party).
  if (!isCount(u.prompt_tokens) || !isCount(u.completion_tokens)) {
    return null;
  }
  const details = u.prompt_tokens_details as Record<string, unknown> | null | undefined;
  return {
    promptTokens: u.prompt_tokens,
    completionTokens: u.completion_tokens,
    cachedTokens: isCount(details?.cached_tokens) ? details.cached_tokens : 0,
  };
}

/** Replaces every replica-side name (the LoRA name) in a message with what the client called the model. */
export function scrubNames(text: string, replicaName: string | null, clientModel: string): string {
  return replicaName ? text.split(replicaName).join(clientModel) : text;
}

/** The response's first `"model"` field: the top-level one (vLLM writes it before `choices`). */
export const MODEL_FIELD = /"model":"(?:[^"\\]|\\.)*"/;
/** The `usage` field: null, or an object with at most one nested object (`prompt_tokens_details`). */
const USAGE_FIELD = /"usage":(null|\{(?:[^{}]|\{[^{}]*\})*\})/;
/** An SSE event ends at a blank line; lines end in CRLF, LF or CR, and may mix them. */
const EVENT_END = /\r\n\r\n|\r\n\n|\n\r\n|\n\n|\r\r/;
/** An event this large without its end is not SSE (an upstream that ignored `stream: true`, say). */
const MAX_EVENT_CHARS = 1 << 20;
/** A chunk that carries generated text (not the role-only first chunk nor the finish chunk). */
const CONTENT_FIELD = /"(?:content|text)":"(?!")/;
const LINE_END = /\r\n|\n|\r/;
/** A chunk's choice index: its first `"index"` key (inside strings every quote is escaped). */
const CHOICE_INDEX = /"index":(\d+)/;

function removeField(json: string, match: RegExpExecArray): string {
  const start = match.index;
  const end = start + match[0].length;
  if (json[start - 1] === ",") {
    return json.slice(0, start - 1) + json.slice(end);
  }
  return json.slice(0, start) + json.slice(json[end] === "," ? end + 1 : end);
}

function parseUsage(field: string | null): UsageCounts | null {
  if (field === null || field === "null") {
    return null;
  }
  try {
    return usageFrom(JSON.parse(field));
  } catch {
    return null;
  }
}

/** Usage from a complete (non-streamed) response body, without parsing the whole body. */
export function usageFromBody(text: string): UsageCounts | null {
  return parseUsage(USAGE_FIELD.exec(text)?.[1] ?? null);
}

/** The payload of an event's `data:` lines (joined by newlines, as SSE defines), or null if it has none. */
function eventData(block: string): string | null {
  if (block.startsWith("data: ") && !LINE_END.test(block)) {
    return block.slice(6);
  }
  let data: string | null = null;
  for (const line of block.split(LINE_END)) {
    if (line.startsWith("data:")) {
      const value = line.slice(line[5] === " " ? 6 : 5);
      data = data === null ? value : `${data}\n${value}`;
    }
  }
  return data;
}

/**
 * Rewrites vLLM's SSE stream for the client, event by event, as the bytes arrive: the response's
 * `model` becomes the name the client sent, usage the client did not ask for is removed (the
 * gateway always asks the replica for it, to meter cut streams), and replica names never leak.
 * Synchronous and allocation-light: it runs once per network chunk of every stream.
 *
 * The `[DONE]` event is held back (`sawDone` turns true): the caller sends `DONE_EVENT` itself once
 * the request's usage is durable, so a client that saw the end of a stream was billed for it.
 */
export class SseRewriter {
  /** The replica sent `data: [DONE]`: the stream is complete and its usage final. */
  sawDone = false;
  /** The first event that carried a token (or anything but the usage-only chunk) was seen. */
  sawToken = false;
  /** Events that carried generated text (with `countContent`): a fallback's cut stream bills one token each. */
  contentEvents = 0;
  /** The upstream's bytes cannot be read as SSE: the stream must end with an error. */
  broken = false;
  /** The replica's mid-stream error (`data: {"error": …}`), scrubbed of replica names. */
  streamError: string | null = null;
  private readonly decoder = new StringDecoder("utf8");
  private buffer = "";
  private usageField: string | null = null;
  private readonly modelField: string;
  private readonly clientModel: string;
  private readonly replicaName: string | null;
  private readonly wanted: ClientStreamOptions;
  private readonly countContent: boolean;
  /** Set when a request generates several sequences (n > 1, or a batch of prompts). */
  private readonly choices: {
    perPrompt: number;
    prompts: number;
    /** Each choice's completion tokens so far, and each prompt's tokens, as the chunks reported them. */
    completion: Map<number, number>;
    prompt: Map<number, number>;
    /** The usage-only chunk at the end: every prompt and choice summed by the engine. */
    final: string | null;
  } | null;

  /**
   * `countContent`: count `contentEvents` (only a fallback needs them: replicas report usage on every
   * chunk). `choices`: choices per prompt (`n`) and prompts of a request that generates several
   * sequences: vLLM's continuous usage then counts each chunk's own choice only
   * (`previous_num_tokens[i]`), so a cut stream is billed the sum over choices, not the last chunk's.
   */
  constructor(options: {
    clientModel: string;
    replicaName: string | null;
    wanted: ClientStreamOptions;
    countContent?: boolean;
    choices?: { perPrompt: number; prompts: number };
  }) {
    this.clientModel = options.clientModel;
    this.replicaName = options.replicaName;
    this.wanted = options.wanted;
    this.countContent = options.countContent ?? false;
    this.modelField = `"model":${JSON.stringify(options.clientModel)}`;
    const choices = options.choices;
    this.choices =
      choices && choices.perPrompt * choices.prompts > 1
        ? { ...choices, completion: new Map(), prompt: new Map(), final: null }
        : null;
  }

  /**
   * What the upstream reported so far (cumulative with continuous stats), parsed on demand: the final
   * usage chunk when it came, else, for several sequences, every prompt's and every choice's last count.
   */
  usage(): UsageCounts | null {
    const choices = this.choices;
    if (choices === null) {
      return parseUsage(this.usageField);
    }
    if (choices.final !== null) {
      return parseUsage(choices.final);
    }
    if (choices.completion.size === 0 && choices.prompt.size === 0) {
      return null;
    }
    const sum = (m: Map<number, number>) => [...m.values()].reduce((a, b) => a + b, 0);
    return { promptTokens: sum(choices.prompt), completionTokens: sum(choices.completion), cachedTokens: 0 };
  }

  /** Prompts (by position) of which the upstream has reported nothing yet: a cut stream bills them estimated. */
  unreportedPrompts(): number[] {
    const choices = this.choices;
    if (choices === null) {
      return this.usage() === null ? [0] : [];
    }
    if (choices.final !== null) {
      return [];
    }
    return Array.from({ length: choices.prompts }, (_, i) => i).filter((i) => !choices.prompt.has(i));
  }

  private countChoice(chunk: string, usageField: string): void {
    const choices = this.choices;
    const index = CHOICE_INDEX.exec(chunk);
    const counts = parseUsage(usageField);
    if (choices === null || index?.[1] === undefined || counts === null) {
      return;
    }
    const i = Number(index[1]);
    const prompt = Math.floor(i / choices.perPrompt);
    if (prompt >= choices.prompts) {
      return; // not a choice this request can have: believed for nothing
    }
    choices.completion.set(i, Math.max(choices.completion.get(i) ?? 0, counts.completionTokens));
    choices.prompt.set(prompt, counts.promptTokens);
  }

  /** The client's bytes for every event completed by `chunk` ("" when none is complete yet). */
  push(chunk: Buffer): string {
    this.buffer += this.decoder.write(chunk);
    let out = "";
    for (;;) {
      const end = EVENT_END.exec(this.buffer);
      if (end === null) {
        if (this.buffer.length > MAX_EVENT_CHARS) {
          this.buffer = "";
          this.streamError ??= "the upstream's answer is not a server-sent event stream";
          this.broken = true;
        }
        return out;
      }
      const block = this.buffer.slice(0, end.index);
      this.buffer = this.buffer.slice(end.index + end[0].length);
      if (block.length > 0 && !this.sawDone) {
        out += this.rewriteEvent(block);
      }
    }
  }

  /** The client's bytes for an unterminated last event, at the end of the upstream body. */
  end(): string {
    const rest = (this.buffer + this.decoder.end()).trim();
    this.buffer = "";
    return rest.length > 0 && !this.sawDone ? this.rewriteEvent(rest) : "";
  }

  private rewriteEvent(block: string): string {
    const data = eventData(block);
    if (data === null) {
      return `${block}\n\n`;
    }
    if (data === "[DONE]") {
      this.sawDone = true;
      return "";
    }
    if (data.startsWith('{"error"')) {
      const message = scrubNames(data, this.replicaName, this.clientModel);
      this.streamError = message;
      return `data: ${message}\n\n`;
    }
    // String edits, not JSON.parse + stringify per chunk: inside JSON strings every quote is escaped,
    // so these patterns can only match the chunk's own top-level fields.
    let out = data.replace(MODEL_FIELD, this.modelField);
    const usageField = USAGE_FIELD.exec(out);
    const reported = usageField?.[1] && usageField[1] !== "null" ? usageField[1] : null;
    if (reported !== null) {
      this.usageField = reported;
    }
    if (out.includes('"choices":[]')) {
      if (this.choices && reported !== null) {
        this.choices.final = reported;
      }
      return this.wanted.includeUsage ? `data: ${out}\n\n` : "";
    }
    if (this.choices && reported !== null) {
      this.countChoice(out, reported);
    }
    this.sawToken = true;
    if (this.countContent && CONTENT_FIELD.test(out)) {
      this.contentEvents++;
    }
    if (usageField && !this.wanted.continuousUsage) {
      out = removeField(out, usageField);
    }
    return `data: ${out}\n\n`;
  }
}

export const DONE_EVENT = "data: [DONE]\n\n";
