export { type AgentAppDeps, createAgentApp } from "./app.ts";
export { type AgentCallCode, AgentClient, type AgentLoadRequest, type AgentResult } from "./client.ts";
export { AgentError, type AgentErrorCode } from "./errors.ts";
export { type RegistrationResult, registerReplica } from "./register.ts";
export {
  type CacheDto,
  type CacheEntryDto,
  LoadAdapterBody,
  type LoadAdapterResponse,
  loraNameProblem,
  UnloadAdapterBody,
  type UnloadAdapterResponse,
} from "./schema.ts";
export { type RunningAgent, type StartAgentOptions, startAgent } from "./server.ts";
export { ReplicaAgent, type ReplicaAgentOptions } from "./service.ts";
