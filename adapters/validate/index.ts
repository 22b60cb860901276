import type { BaseModelSpec } from "./base-spec.ts";
import { problem, type ValidationError } from "./errors.ts";
import {
  checkConfigAgainstBase,
  type LoraConfig,
  parsePeftConfig,
  resolveLoraTargets,
} from "./peft-config.ts";
import { type HeaderParse, MAX_HEADER_BYTES, parseSafetensorsHeader } from "./safetensors.ts";
import { checkAdapterTensors, type LoraDtype } from "./tensors.ts";

export type { BaseModelArchitectureSpec, BaseModelSpec, LoraLinearModule } from "./base-spec.ts";
export {
  headDim,
  isLoraLinearModule,
  LORA_LINEAR_MODULES,
  loraTensorName,
  moduleDims,
  moduleGroup,
  modulePath,
  SEEDED_BASE_MODELS,
} from "./base-spec.ts";
export type { ValidationError } from "./errors.ts";
export { familyMismatch, identifyModel } from "./model-family.ts";
export type { LoraConfig, LoraTarget } from "./peft-config.ts";
export {
  checkConfigAgainstBase,
  parsePeftConfig,
  resolveLoraTargets,
  VLLM_MAX_LORA_RANK,
} from "./peft-config.ts";
export type { HeaderReadState, SafetensorsDtype, SafetensorsHeader, TensorEntry } from "./safetensors.ts";
export {
  detectForeignFormat,
  MAX_HEADER_BYTES,
  parseSafetensorsHeader,
  SafetensorsHeaderReader,
} from "./safetensors.ts";
export type { LoraDtype } from "./tensors.ts";
export { checkAdapterTensors, LORA_DTYPES } from "./tensors.ts";

export interface ValidateAdapterInput {
  /** adapter_config.json as text. */
  configText: string;
  /** The leading bytes of adapter_model.safetensors: at least 8 + N (e.g. `SafetensorsHeaderReader.headerBytes`), or the whole file. */
  header: Uint8Array;
  /** The size of adapter_model.safetensors in bytes. */
  totalSize: number;
  base: BaseModelSpec;
}

export interface ValidateAdapterOptions {
  /** Cap on reported errors; the last entry then says how many were left out. */
  maxErrors?: number;
  maxHeaderBytes?: number;
}

export interface AdapterSummary {
  /** The largest rank any module uses (r, or more through rank_pattern): what --max-lora-rank must cover. */
  rank: number;
  alpha: number;
  /** The modules adapted, in the base's layer order, e.g. ["q_proj", "v_proj"]. */
  targetModules: string[];
  dtype: LoraDtype;
  useRslora: boolean;
  tensorCount: number;
}

export type ValidateAdapterResult =
  | { ok: true; summary: AdapterSummary }
  | { ok: false; errors: ValidationError[] };

/** An adapter with many misnamed tensors would otherwise answer with one error per tensor (thousands). */
const DEFAULT_MAX_ERRORS = 200;

/** The config's own checks and those against the base; usable before the weights have arrived. */
export function checkAdapterConfig(
  configText: string,
  base: BaseModelSpec,
): { config: LoraConfig | null; errors: ValidationError[] } {
  const parsed = parsePeftConfig(configText);
  if (parsed.config === null) {
    return parsed;
  }
  return {
    config: parsed.config,
    errors: [...parsed.errors, ...checkConfigAgainstBase(parsed.config, base)],
  };
}

/**
 * Validates a PEFT LoRA upload against the base it will serve on, from the config text and the
 * safetensors header alone (the tensor data is never read). Reports every problem found, not just the first.
 */
export function validateAdapter(
  input: ValidateAdapterInput,
  options: ValidateAdapterOptions = {},
): ValidateAdapterResult {
  const parsed = parseSafetensorsHeader(
    input.header,
    input.totalSize,
    options.maxHeaderBytes ?? MAX_HEADER_BYTES,
  );
  return assessAdapter(input.configText, parsed, input.base, options);
}

/** `validateAdapter` for a header already parsed (see `parseHeaderPrefix` and `completeHeaderParse`). */
export function assessAdapter(
  configText: string,
  parsed: HeaderParse,
  base: BaseModelSpec,
  options: ValidateAdapterOptions = {},
): ValidateAdapterResult {
  const input = { base };
  const { config, errors } = checkAdapterConfig(configText, base);
  // One at a time: a hostile header yields hundreds of thousands of errors, too many to spread.
  for (const e of parsed.errors) {
    errors.push(e);
  }
  let dtype: LoraDtype | null = null;
  if (parsed.header !== null) {
    const tensors = checkAdapterTensors(parsed.header, input.base, config);
    for (const e of tensors.errors) {
      errors.push(e);
    }
    dtype = tensors.dtype;
  }

  if (errors.length > 0 || config === null || parsed.header === null || dtype === null) {
    const max = Math.max(1, options.maxErrors ?? DEFAULT_MAX_ERRORS);
    if (errors.length > max) {
      const omitted = errors.length - (max - 1);
      return {
        ok: false,
        errors: [...errors.slice(0, max - 1), problem("adapter_model", null, `and ${omitted} more errors`)],
      };
    }
    return { ok: false, errors };
  }
  const targets = resolveLoraTargets(config, input.base);
  const modules = [...new Set(targets.map((t) => t.module))];
  return {
    ok: true,
    summary: {
      rank: Math.max(config.r, ...targets.map((t) => t.rank)),
      alpha: config.loraAlpha,
      targetModules: modules,
      dtype,
      useRslora: config.useRslora,
      tensorCount: parsed.header.tensors.length,
    },
  };
}
