export type { AdapterCheck, ModuleDims } from "./adapter-files.ts";
export { LLAMA_31_8B_MODULES, LLAMA_EXPECTED_MODULES } from "./adapter-files.ts";
export type { LatencyModel } from "./engine.ts";
export { EngineDeadError, L4_LATENCY } from "./engine.ts";
export type { ReplicaSimOptions, StaticLoraModule, VersionProfile } from "./options.ts";
export { ALLOWED_LORA_RANKS, DEFAULT_MODEL, PROFILE_BEHAVIOUR, VERSION_PROFILES } from "./options.ts";
export type { RegisteredAdapter, ReplicaSim, ReplicaSimSnapshot, RunningReplicaSim } from "./server.ts";
export { createReplicaSim } from "./server.ts";
