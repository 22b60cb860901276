/** The inference engines loraplane drives, one namespace each. */
export * as vllm from "./vllm/index.ts";
