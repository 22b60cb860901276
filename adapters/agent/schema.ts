import { z } from "zod";

/**
 * LoRA names become a directory under the cache and a label inside vLLM's comma-joined
 * `lora_requests_info`: letters, digits and `-_.@` only, starting with a letter or digit (so never
 * a dot-file like the agent's temp dirs), no `..`, at most 128 characters.
 */
export const LORA_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;

/** Returns what is wrong with a LoRA name, or null when it is safe to use as a directory name. */
export function loraNameProblem(name: string): string | null {
  if (name.length === 0) {
    return "is empty";
  }
  if (name.length > 128) {
    return `is ${name.length} characters long; at most 128 are allowed`;
  }
  if (name.includes("..")) {
    return `${JSON.stringify(name)} contains '..'`;
  }
  if (!LORA_NAME_PATTERN.test(name)) {
    return `${JSON.stringify(name)} must start with a letter or digit and use only letters, digits, '-', '_', '.' and '@' (no '/', ',', spaces)`;
  }
  return null;
}

/** S3 keys never become local paths here, but a key that looks like one is refused all the same. */
export function objectKeyProblem(key: string): string | null {
  if (key.length === 0 || key.length > 1024) {
    return "must be 1 to 1024 characters";
  }
  if (key.startsWith("/") || key.includes("\\")) {
    return `${JSON.stringify(key)} must be a relative S3 key without backslashes`;
  }
  if (key.split("/").some((part) => part === ".." || part === "." || part === "")) {
    return `${JSON.stringify(key)} has an empty, '.' or '..' segment`;
  }
  if (/[\p{Cc}]/u.test(key)) {
    return `${JSON.stringify(key)} contains a control character`;
  }
  return null;
}

const LoraName = z.string().superRefine((v, ctx) => {
  const problem = loraNameProblem(v);
  if (problem) {
    ctx.addIssue({ code: "custom", message: problem });
  }
});

const ObjectKey = z.string().superRefine((v, ctx) => {
  const problem = objectKeyProblem(v);
  if (problem) {
    ctx.addIssue({ code: "custom", message: problem });
  }
});

/** Ceiling for one weights file, as the upload path enforces it. */
const MAX_ADAPTER_BYTES = 16 * 1024 ** 3;

export const LoadAdapterBody = z.object({
  lora_name: LoraName,
  object_key: ObjectKey,
  config_object_key: ObjectKey,
  sha256: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, "must be 64 hexadecimal characters")
    .transform((v) => v.toLowerCase()),
  size_bytes: z.number().int().min(1).max(MAX_ADAPTER_BYTES),
});
export type LoadAdapterBody = z.infer<typeof LoadAdapterBody>;

export const UnloadAdapterBody = z.object({ lora_name: LoraName });
export type UnloadAdapterBody = z.infer<typeof UnloadAdapterBody>;

export interface LoadAdapterResponse {
  lora_name: string;
  /** Absolute directory the replica was given. */
  path: string;
  /** `already_loaded`: the name was registered with this path before the call (idempotent). */
  status: "loaded" | "already_loaded";
  /** True when this call fetched the files from S3; false on a cache hit or an idempotent call. */
  downloaded: boolean;
  bytes: number;
}

export interface UnloadAdapterResponse {
  lora_name: string;
  /** The replica had the name registered and dropped it. */
  unregistered: boolean;
  /** `pending_delete`: requests may still read the files; the GC loop removes them once none can. */
  files: "removed" | "pending_delete" | "none";
}

export interface CacheEntryDto {
  lora_name: string;
  bytes: number;
  /** Null when the replica could not be asked. */
  registered: boolean | null;
  pending_delete: boolean;
  last_used_at: string;
  sha256: string | null;
}

export interface CacheDto {
  bytes: number;
  budget_bytes: number;
  entries: CacheEntryDto[];
}
