/** The inference engines loraplane drives: what they share, then one namespace each. */
import type { ReplicaClient, ReplicaClientOptions } from "./replica-client.ts";
import * as sglang from "./sglang/index.ts";
import * as vllm from "./vllm/index.ts";

export * from "./replica-client.ts";
export { sglang, vllm };

export const ENGINES = ["vllm", "sglang"] as const;
export type EngineName = (typeof ENGINES)[number];

/** What differs per engine on the request path and in the replica's management calls. */
export interface EngineDriver {
  createReplicaClient(options: ReplicaClientOptions): ReplicaClient;
  /** The body for a replica of this engine: the adapter named its way, usage on every chunk. */
  replicaRequestBody(body: Record<string, unknown>, loraName: string | null, baseModel: string): string;
  /** The replica answered as one that does not know the adapter it was routed for (it restarted). */
  isLostAdapter(status: number, text: string, loraName: string | null): boolean;
  /**
   * A stream's refusal comes as a 200 whose first event is the error (SGLang's
   * `create_streaming_error_response`), so the first event is read before the client gets a byte.
   */
  streamErrorsInBand: boolean;
}

export const ENGINE_DRIVERS: Readonly<Record<EngineName, EngineDriver>> = {
  vllm: {
    createReplicaClient: vllm.createReplicaClient,
    replicaRequestBody: (body, loraName) => vllm.replicaRequestBody(body, loraName),
    isLostAdapter: vllm.isLostAdapter,
    streamErrorsInBand: false,
  },
  sglang: {
    createReplicaClient: sglang.createReplicaClient,
    replicaRequestBody: sglang.replicaRequestBody,
    isLostAdapter: sglang.isLostAdapter,
    streamErrorsInBand: true,
  },
};
