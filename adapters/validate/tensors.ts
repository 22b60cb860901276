import {
  type BaseModelSpec,
  isLoraLinearModule,
  type LoraLinearModule,
  loraTensorName,
  moduleDims,
  moduleGroup,
} from "./base-spec.ts";
import { problem, showShape, type ValidationError } from "./errors.ts";
import { type LoraConfig, type LoraTarget, resolveLoraTargets } from "./peft-config.ts";
import type { SafetensorsHeader, TensorEntry } from "./safetensors.ts";

/** The dtypes vLLM loads LoRA weights from (it casts them to --lora-dtype). */
export const LORA_DTYPES = ["F16", "BF16", "F32"] as const;
export type LoraDtype = (typeof LORA_DTYPES)[number];

export interface TensorCheck {
  errors: ValidationError[];
  /** The dtype the LoRA weights share (the majority when they are mixed); null with no usable tensor. */
  dtype: LoraDtype | null;
}

/** PEFT saves `base_model.model.` + the HF module path, and the HF path of a decoder layer starts `model.layers.`. */
const EXPECTED_PREFIX = "base_model.model.model.";
const LORA_NAME =
  /^(?<prefix>.*?)layers\.(?<layer>\d+)\.(?<group>[A-Za-z0-9_]+)\.(?<module>[A-Za-z0-9_]+)\.lora_(?<ab>[AB])\.weight$/;
const NAME_FORM = "base_model.model.model.layers.<i>.(self_attn|mlp).<module>.lora_(A|B).weight";

const FILE = "adapter_model";

function err(tensor: string | null, message: string): ValidationError {
  return problem(FILE, tensor, message);
}

function isLoraDtype(dtype: string): dtype is LoraDtype {
  return (LORA_DTYPES as readonly string[]).includes(dtype);
}

function unexpectedName(name: string): string {
  let what = "";
  if (name.includes("lora_magnitude_vector")) {
    what = ": this is a DoRA magnitude vector, and vLLM does not support DoRA";
  } else if (/lora_embedding_[AB]/.test(name)) {
    what = ": this is an embedding LoRA, which vLLM does not load for this base";
  } else if (/\.lora_[AB]\.[^.]+\.weight$/.test(name)) {
    what =
      ": the adapter name is still in it (PEFT's save_pretrained strips it, e.g. lora_A.default.weight → lora_A.weight)";
  } else if (name.endsWith(".bias")) {
    what = ": this is a bias, and vLLM loads no LoRA biases";
  } else if (!/lora_[AB]/.test(name)) {
    what = ": this is a full module weight (modules_to_save?), which vLLM does not load";
  }
  return `unexpected tensor: expected only LoRA weights named ${NAME_FORM}${what}`;
}

interface Parsed {
  layer: number;
  module: LoraLinearModule;
  ab: "A" | "B";
}

/**
 * Parses a tensor name into (layer, module, A/B); reports why when it is not exactly PEFT's layout.
 * `located` is set for names that point at a real module through a wrong path, so they still count as present.
 */
function parseName(
  name: string,
  base: BaseModelSpec,
): { parsed: Parsed | null; located: Parsed | null; error: string | null } {
  const match = LORA_NAME.exec(name);
  const groups = match?.groups;
  if (groups === undefined) {
    return { parsed: null, located: null, error: unexpectedName(name) };
  }
  const { prefix = "", layer: layerText = "", group = "", module = "", ab = "" } = groups;
  if (!isLoraLinearModule(module)) {
    const allowed = base.loraTargetModules.join(", ");
    return {
      parsed: null,
      located: null,
      error: `unexpected tensor: expected a module among ${allowed} (the LoRA targets of base ${base.id}), found "${module}"`,
    };
  }
  const layer = Number(layerText);
  const located: Parsed = { layer, module, ab: ab === "A" ? "A" : "B" };
  if (String(layer) !== layerText) {
    return {
      parsed: null,
      located: null,
      error: `layer index: expected a plain decimal index, found "${layerText}": vLLM would not find the module and would silently ignore the tensor`,
    };
  }
  const expectedName = loraTensorName(layer, module, located.ab);
  if (prefix !== EXPECTED_PREFIX) {
    return {
      parsed: null,
      located,
      error: `name: expected ${expectedName}, found prefix "${prefix}" instead of "${EXPECTED_PREFIX}": vLLM checks only the last name component, so it would load this tensor and silently ignore it`,
    };
  }
  if (group !== moduleGroup(module)) {
    return {
      parsed: null,
      located,
      error: `name: expected ${expectedName} (${module} lives under ${moduleGroup(module)}), found it under "${group}": vLLM would load this tensor and silently ignore it`,
    };
  }
  const layers = base.architecture.num_hidden_layers;
  if (layer >= layers) {
    return {
      parsed: null,
      located: null,
      error: `layer index: expected 0..${layers - 1} (base ${base.id} has ${layers} layers), found ${layer}`,
    };
  }
  return { parsed: located, located, error: null };
}

function rankNote(target: LoraTarget, config: LoraConfig): string {
  return target.rank === config.r ? `r = ${target.rank}` : `r = ${target.rank} from rank_pattern`;
}

function checkShape(
  tensor: TensorEntry,
  at: Parsed,
  base: BaseModelSpec,
  target: LoraTarget | null,
  config: LoraConfig | null,
): string | null {
  const dims = moduleDims(base.architecture, at.module);
  const features = at.ab === "A" ? dims.inFeatures : dims.outFeatures;
  const role =
    at.ab === "A"
      ? `[r, in_features], ${at.module} in_features = ${dims.inFeatures}`
      : `[out_features, r], ${at.module} out_features = ${dims.outFeatures}`;
  const found = showShape(tensor.shape);
  if (target !== null && config !== null) {
    const expected = at.ab === "A" ? [target.rank, features] : [features, target.rank];
    const matches =
      tensor.shape.length === 2 && tensor.shape[0] === expected[0] && tensor.shape[1] === expected[1];
    return matches
      ? null
      : `shape: expected ${showShape(expected)} (${role}, ${rankNote(target, config)}), found ${found}`;
  }
  const featureAxis = at.ab === "A" ? 1 : 0;
  const ok =
    tensor.shape.length === 2 &&
    tensor.shape[featureAxis] === features &&
    (tensor.shape[1 - featureAxis] ?? 0) > 0;
  const expected = at.ab === "A" ? `[r, ${features}]` : `[${features}, r]`;
  return ok ? null : `shape: expected ${expected} (${role}), found ${found}`;
}

/**
 * Checks the tensors against PEFT's layout for a Llama-style base: names, layers, presence of every A and B the
 * config implies and nothing else, exact shapes (from the per-module rank), and one float dtype.
 * Without a usable config, only what the base alone implies is checked.
 */
export function checkAdapterTensors(
  header: SafetensorsHeader,
  base: BaseModelSpec,
  config: LoraConfig | null,
): TensorCheck {
  const errors: ValidationError[] = [];
  const targets = config === null ? null : resolveLoraTargets(config, base);
  const byKey = new Map<string, LoraTarget>();
  for (const t of targets ?? []) {
    byKey.set(`${t.layer}.${t.module}`, t);
  }
  const targetedModules = new Set((targets ?? []).map((t) => t.module));
  const present = new Set<string>();
  const dtypeCounts = new Map<LoraDtype, number>();
  const usable: { tensor: TensorEntry; dtype: LoraDtype }[] = [];
  const ranks = new Map<string, { A?: number; B?: number }>();

  for (const malformed of header.malformed) {
    const { located } = parseName(malformed.name, base);
    if (located !== null) {
      present.add(`${located.layer}.${located.module}.${located.ab}`);
    }
  }

  for (const tensor of header.tensors) {
    const { parsed, located, error } = parseName(tensor.name, base);
    if (located !== null) {
      present.add(`${located.layer}.${located.module}.${located.ab}`);
    }
    if (parsed === null) {
      errors.push(err(tensor.name, error ?? unexpectedName(tensor.name)));
      continue;
    }
    const key = `${parsed.layer}.${parsed.module}`;
    const target = byKey.get(key) ?? null;
    if (config !== null && target === null) {
      errors.push(err(tensor.name, notTargeted(parsed, config, targetedModules)));
      continue;
    }
    if (config === null && !base.loraTargetModules.includes(parsed.module)) {
      errors.push(
        err(
          tensor.name,
          `unexpected tensor: expected a module among ${base.loraTargetModules.join(", ")} (the LoRA targets of base ${base.id}), found ${parsed.module}`,
        ),
      );
      continue;
    }
    if (isLoraDtype(tensor.dtype)) {
      dtypeCounts.set(tensor.dtype, (dtypeCounts.get(tensor.dtype) ?? 0) + 1);
      usable.push({ tensor, dtype: tensor.dtype });
    } else {
      errors.push(err(tensor.name, `dtype: expected ${LORA_DTYPES.join(", ")}, found ${tensor.dtype}`));
    }
    const shapeError = checkShape(tensor, parsed, base, target, config);
    if (shapeError !== null) {
      errors.push(err(tensor.name, shapeError));
    } else if (config === null) {
      const pair = ranks.get(key) ?? {};
      pair[parsed.ab] = parsed.ab === "A" ? tensor.shape[0] : tensor.shape[1];
      ranks.set(key, pair);
    }
  }

  for (const [key, pair] of ranks) {
    if (pair.A !== undefined && pair.B !== undefined && pair.A !== pair.B) {
      const [layer = "", module = ""] = key.split(".");
      const name = isLoraLinearModule(module) ? loraTensorName(Number(layer), module, "B") : key;
      errors.push(err(name, `shape: expected rank ${pair.A} to match its lora_A, found rank ${pair.B}`));
    }
  }

  if (header.tensors.length + header.malformed.length === 0) {
    errors.push(err(null, `expected LoRA tensors named ${NAME_FORM}, found no tensors`));
  } else {
    for (const t of targets ?? []) {
      for (const ab of ["A", "B"] as const) {
        if (!present.has(`${t.layer}.${t.module}.${ab}`)) {
          errors.push(
            err(
              loraTensorName(t.layer, t.module, ab),
              `missing: expected this tensor (adapter_config targets ${t.module} in layer ${t.layer}, so both lora_A and lora_B), found none`,
            ),
          );
        }
      }
    }
  }

  const ranked = [...dtypeCounts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const majority = ranked[0];
  if (majority !== undefined && ranked.length > 1) {
    for (const { tensor, dtype } of usable) {
      if (dtype !== majority[0]) {
        errors.push(
          err(
            tensor.name,
            `dtype: expected ${majority[0]} like the other ${majority[1]} LoRA tensors (one dtype for the whole adapter), found ${dtype}`,
          ),
        );
      }
    }
  }
  return { errors, dtype: majority?.[0] ?? null };
}

function notTargeted(at: Parsed, config: LoraConfig, targetedModules: Set<LoraLinearModule>): string {
  if (!targetedModules.has(at.module)) {
    const listed = [...targetedModules].join(", ");
    return `unexpected tensor: expected only the modules adapter_config targets (${listed}), found ${at.module}`;
  }
  if (config.layersToTransform !== null && !config.layersToTransform.includes(at.layer)) {
    return `unexpected tensor: expected only the layers in adapter_config layers_to_transform (${config.layersToTransform.join(", ")}), found layer ${at.layer}`;
  }
  return `unexpected tensor: expected only modules adapter_config targets, found ${at.module} in layer ${at.layer}, which its target_modules/exclude_modules leave out`;
}
