/**
 * One problem with an uploaded adapter. `path` is `<file>` or `<file>:<field or tensor>`, where file is
 * `adapter_config` or `adapter_model`, e.g. `adapter_config:r` or
 * `adapter_model:base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`.
 */
export interface ValidationError {
  path: string;
  message: string;
}

export type AdapterFile = "adapter_config" | "adapter_model";

export function problem(file: AdapterFile, field: string | null, message: string): ValidationError {
  return { path: field === null ? file : `${file}:${field}`, message };
}

/** JSON-ish rendering of a found value for messages, bounded so a hostile upload cannot bloat the error. */
export function show(value: unknown): string {
  if (value === undefined) {
    return "nothing (field missing)";
  }
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}

export function showShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
