import { getPriority, setPriority } from "node:os";
import { parentPort } from "node:worker_threads";
import type { BaseModelSpec } from "./base-spec.ts";
import type { ValidationError } from "./errors.ts";
import { assessAdapter } from "./index.ts";
import { completeHeaderParse, type HeaderParse, parseHeaderPrefix } from "./safetensors.ts";

/** Messages from the pool (header-pool.ts); a job's messages come in this order, each at most once. */
export type HeaderWorkerRequest =
  | { type: "header"; id: number; bytes: Uint8Array; maxHeaderBytes: number; maxErrors: number }
  | {
      type: "finish";
      id: number;
      configText: string;
      totalSize: number;
      base: BaseModelSpec;
      maxErrors: number;
    }
  | { type: "drop"; id: number };

export type HeaderWorkerReply =
  | { type: "header"; id: number; errors: ValidationError[] }
  | { type: "finish"; id: number; result: ReturnType<typeof assessAdapter> };

// A tenant's header is batch work beside the event loop that serves every tenant: this thread
// yields a core to the loop whenever both want one (on Linux a priority is per thread; pid 0 is
// this one). Raising a niceness needs no privilege; where it fails anyway, parsing runs as before.
try {
  setPriority(Math.min(19, getPriority() + 10));
} catch {}

// Parsed headers wait here for their file's size; the pool drops a job it gives up on.
const parsed = new Map<number, HeaderParse>();

const bounded = (errors: ValidationError[], max: number) =>
  errors.length > max
    ? [
        ...errors.slice(0, max - 1),
        { path: "adapter_model", message: `and ${errors.length - (max - 1)} more errors` },
      ]
    : errors;

parentPort?.on("message", (message: HeaderWorkerRequest) => {
  if (message.type === "header") {
    const parse = parseHeaderPrefix(message.bytes, message.maxHeaderBytes);
    parsed.set(message.id, parse);
    const reply: HeaderWorkerReply = {
      type: "header",
      id: message.id,
      errors: bounded(parse.errors, message.maxErrors),
    };
    parentPort?.postMessage(reply);
    return;
  }
  if (message.type === "finish") {
    const parse = parsed.get(message.id);
    parsed.delete(message.id);
    const complete = parse
      ? completeHeaderParse(parse, message.totalSize)
      : { header: null, errors: [{ path: "adapter_model", message: "the header was not received" }] };
    const result = assessAdapter(message.configText, complete, message.base, {
      maxErrors: message.maxErrors,
    });
    const reply: HeaderWorkerReply = { type: "finish", id: message.id, result };
    parentPort?.postMessage(reply);
    return;
  }
  parsed.delete(message.id);
});
