import type { ReplicaSimOptions } from "./options.ts";
import { createReplicaSim as createVllmReplicaSim, type ReplicaSim } from "./server.ts";
import { createSglangReplicaSim, type SglangReplicaSim } from "./sglang-server.ts";

/**
 * A simulated replica speaking vLLM's protocol (default) or, with `engine: "sglang"`, SGLang's
 * (README "SGLang mode"). Both share the engine core and the `ReplicaSim` interface.
 */
export function createReplicaSim(options: ReplicaSimOptions & { engine: "sglang" }): SglangReplicaSim;
export function createReplicaSim(options?: ReplicaSimOptions): ReplicaSim;
export function createReplicaSim(options: ReplicaSimOptions = {}): ReplicaSim {
  return options.engine === "sglang" ? createSglangReplicaSim(options) : createVllmReplicaSim(options);
}
