// The API process's entry for the rest of the system (infra starts it from here).
export * from "./app.ts";
export * from "./runtime.ts";
