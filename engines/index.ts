/** The inference engines loraplane drives: what they share, then one namespace each. */
export * from "./replica-client.ts";
export * as vllm from "./vllm/index.ts";
