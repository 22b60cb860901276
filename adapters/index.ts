export * from "./agent/index.ts";
export * from "./cleanup.ts";
export * from "./storage.ts";
export * from "./upload.ts";
export * from "./validate/base-spec.ts";
export * from "./validate/header-pool.ts";
