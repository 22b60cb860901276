import { randomBytes } from "node:crypto";
import type { Engine, EngineLora } from "./engine.ts";
import { type ErrorStyle, errorResponse } from "./http-util.ts";
import type { SimConfig } from "./options.ts";
import type { SimTokenizer } from "./tokenizer.ts";

/** What the HTTP layer of one simulated replica shares between its routes. */
export interface ReplicaState {
  cfg: SimConfig;
  tok: SimTokenizer;
  engine: Engine;
  style: ErrorStyle;
  /** The API server's `lora_requests`: registered adapters in load order. */
  registry: Map<string, EngineLora>;
  nextLoraId: number;
  /** Per-name lock serialising load and unload of one name. */
  locks: Map<string, Promise<unknown>>;
  abortedRequestIds: string[];
  inFlight: number;
  fingerprint: string;
}

export type ModelChoice = { kind: "base"; name: string } | { kind: "lora"; lora: EngineLora };

/** vLLM's selection: absent/empty → base; a served name; a registered LoRA; else 404. */
export function resolveModel(s: ReplicaState, model: string | undefined): ModelChoice | Response {
  const first = s.cfg.servedModelNames[0] ?? s.cfg.model;
  if (!model) {
    return { kind: "base", name: first };
  }
  if (s.cfg.servedModelNames.includes(model)) {
    return { kind: "base", name: first };
  }
  const lora = s.registry.get(model);
  if (lora) {
    return { kind: "lora", lora };
  }
  return errorResponse(s.style, 404, `The model \`${model}\` does not exist.`, "NotFoundError", "model");
}

/** vLLM's random_uuid: 16 hex digits. */
export function randomId(): string {
  return randomBytes(8).toString("hex");
}

export async function withNameLock<T>(s: ReplicaState, name: string, fn: () => Promise<T>): Promise<T> {
  const prev = s.locks.get(name) ?? Promise.resolve();
  const run = prev.then(fn, fn);
  const tail = run.catch(() => undefined);
  s.locks.set(name, tail);
  try {
    return await run;
  } finally {
    if (s.locks.get(name) === tail) {
      s.locks.delete(name);
    }
  }
}
