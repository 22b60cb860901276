/**
 * Everything loraplane knows about SGLang's wire protocol: the replica's management calls, the
 * request rewrite and lost-adapter detection, and the metrics text. Streams are OpenAI's SSE, read
 * by the same code as vLLM's (engines/vllm/sse.ts).
 */
export * from "./client.ts";
export * from "./inference.ts";
export * from "./metrics.ts";
