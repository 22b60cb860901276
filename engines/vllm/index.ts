/**
 * Everything loraplane knows about vLLM's wire protocol, in one place: the replica's management
 * and inference calls, the request rewrite and what its answers mean, the SSE stream, and the
 * metrics text. Used by the gateway, the scheduler and the replica agent.
 */
export * from "./client.ts";
export * from "./inference.ts";
export * from "./metrics.ts";
export * from "./sse.ts";
