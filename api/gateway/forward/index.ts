export { forwardCompletion } from "./attempts.ts";
export type * from "./types.ts";
