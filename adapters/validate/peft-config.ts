import {
  type BaseModelSpec,
  isLoraLinearModule,
  LORA_LINEAR_MODULES,
  type LoraLinearModule,
  modulePath,
} from "./base-spec.ts";
import { problem, show, type ValidationError } from "./errors.ts";
import { familyMismatch } from "./model-family.ts";
import { compileModuleRegex, MAX_CONFIG_REGEX_COST } from "./module-regex.ts";

/** The largest --max-lora-rank vLLM accepts (1, 8, 16, 32, 64, 128, 256, 320, 512). */
export const VLLM_MAX_LORA_RANK = 512;

/**
 * How adapter_config names the modules it adapts. A list uses PEFT's rule (a module path equals an entry or ends
 * with "." + entry); a string is a Python regex PEFT full-matches against module paths, except the shorthand
 * "all-linear" (every linear layer but the output head).
 */
export type ModuleSelector =
  | { kind: "list"; names: string[] }
  | { kind: "regex"; source: string; regex: RegExp }
  | { kind: "all-linear" };

export interface PatternRule {
  key: string;
  regex: RegExp;
  value: number;
  cost: number;
}

export interface LoraConfig {
  r: number;
  loraAlpha: number;
  targetModules: ModuleSelector;
  excludeModules: ModuleSelector | null;
  /** In file order: PEFT takes the first key that matches. */
  rankPattern: PatternRule[];
  alphaPattern: PatternRule[];
  useRslora: boolean;
  layersToTransform: number[] | null;
  baseModelNameOrPath: string | null;
}

export interface ConfigParse {
  /** null when the file is unusable: not JSON; r, lora_alpha or target_modules unreadable; patterns too costly. */
  config: LoraConfig | null;
  errors: ValidationError[];
}

/** One (layer, module) the adapter adapts, with the rank and alpha PEFT gave it. */
export interface LoraTarget {
  layer: number;
  module: LoraLinearModule;
  rank: number;
  alpha: number;
}

const FILE = "adapter_config";

function err(field: string | null, message: string): ValidationError {
  return problem(FILE, field, message);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isPositiveInt(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value > 0;
}

function isPositiveNumber(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value) && value > 0;
}

function readSelector(field: string, value: unknown, errors: ValidationError[]): ModuleSelector | null {
  if (typeof value === "string") {
    if (value === "all-linear") {
      return { kind: "all-linear" };
    }
    const compiled = compileModuleRegex(value, "fullmatch");
    if (compiled.error !== undefined) {
      errors.push(
        err(field, `expected a list of module names or a regex over module paths; ${compiled.error}`),
      );
      return null;
    }
    return { kind: "regex", source: value, regex: compiled.regex };
  }
  if (Array.isArray(value) && value.length > 0 && value.every((v) => typeof v === "string" && v !== "")) {
    return { kind: "list", names: [...new Set(value as string[])] };
  }
  errors.push(
    err(field, `expected a non-empty list of module names (or a regex string), found ${show(value)}`),
  );
  return null;
}

function readPatterns(
  field: "rank_pattern" | "alpha_pattern",
  value: unknown,
  errors: ValidationError[],
): PatternRule[] {
  if (value === undefined || value === null) {
    return [];
  }
  if (!isRecord(value)) {
    errors.push(err(field, `expected an object of module pattern → number, found ${show(value)}`));
    return [];
  }
  const rules: PatternRule[] = [];
  for (const [key, item] of Object.entries(value)) {
    const valid = field === "rank_pattern" ? isPositiveInt(item) : isPositiveNumber(item);
    if (!valid || typeof item !== "number") {
      const expected = field === "rank_pattern" ? "a positive integer rank" : "a positive number";
      errors.push(err(`${field}.${key}`, `expected ${expected}, found ${show(item)}`));
      continue;
    }
    const compiled = compileModuleRegex(key, "suffix");
    if (compiled.error !== undefined) {
      errors.push(err(`${field}.${key}`, `expected a module name or pattern; ${compiled.error}`));
      continue;
    }
    rules.push({ key, regex: compiled.regex, value: item, cost: compiled.cost });
  }
  return rules;
}

function readLayers(value: unknown, errors: ValidationError[]): number[] | null {
  if (value === undefined || value === null) {
    return null;
  }
  const list = typeof value === "number" ? [value] : value;
  if (!Array.isArray(list) || list.length === 0 || !list.every((v) => Number.isSafeInteger(v) && v >= 0)) {
    errors.push(
      err(
        "layers_to_transform",
        `expected a layer index or a non-empty list of layer indices, found ${show(value)}`,
      ),
    );
    return null;
  }
  return [...new Set(list as number[])].sort((a, b) => a - b);
}

function isEmptyish(value: unknown): boolean {
  return value === undefined || value === null || (Array.isArray(value) && value.length === 0);
}

/**
 * Parses adapter_config.json and checks what vLLM and PEFT require of it on its own; see
 * `checkConfigAgainstBase` for what depends on the base model. Unknown fields are ignored, as vLLM does.
 */
export function parsePeftConfig(text: string): ConfigParse {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    const bom = text.startsWith("\uFEFF") ? " (it starts with a UTF-8 byte-order mark)" : "";
    return {
      config: null,
      errors: [err(null, `expected a JSON object, found invalid JSON${bom}: ${reason}`)],
    };
  }
  if (!isRecord(parsed)) {
    return {
      config: null,
      errors: [
        err(null, `expected a JSON object, found ${Array.isArray(parsed) ? "an array" : show(parsed)}`),
      ],
    };
  }
  const c = parsed;
  const errors: ValidationError[] = [];

  if (c.peft_type !== "LORA") {
    errors.push(err("peft_type", `expected "LORA", found ${show(c.peft_type)}`));
  }
  const r = isPositiveInt(c.r) ? c.r : null;
  if (r === null) {
    errors.push(err("r", `expected a positive integer rank, found ${show(c.r)}`));
  }
  const loraAlpha = isPositiveNumber(c.lora_alpha) ? c.lora_alpha : null;
  if (loraAlpha === null) {
    errors.push(err("lora_alpha", `expected a positive number, found ${show(c.lora_alpha)}`));
  }
  const targetModules = readSelector("target_modules", c.target_modules, errors);
  const excludeModules = isEmptyish(c.exclude_modules)
    ? null
    : readSelector("exclude_modules", c.exclude_modules, errors);

  if (!(c.use_dora === undefined || c.use_dora === null || c.use_dora === false)) {
    errors.push(
      err("use_dora", `expected false or absent (vLLM does not support DoRA), found ${show(c.use_dora)}`),
    );
  }
  if (!isEmptyish(c.modules_to_save)) {
    errors.push(
      err(
        "modules_to_save",
        `expected null or [] (vLLM serves only the LoRA deltas, not fully trained modules), found ${show(c.modules_to_save)}`,
      ),
    );
  }
  if (!(c.bias === undefined || c.bias === "none")) {
    errors.push(err("bias", `expected "none" (vLLM does not load trained biases), found ${show(c.bias)}`));
  }
  if (!(c.lora_bias === undefined || c.lora_bias === null || c.lora_bias === false)) {
    errors.push(
      err(
        "lora_bias",
        `expected false or absent (vLLM does not load lora_B biases), found ${show(c.lora_bias)}`,
      ),
    );
  }
  if (!isEmptyish(c.target_parameters)) {
    errors.push(
      err(
        "target_parameters",
        `expected null or [] (vLLM adapts modules, not parameters), found ${show(c.target_parameters)}`,
      ),
    );
  }
  const tokens = c.trainable_token_indices;
  if (!isEmptyish(tokens) && !(isRecord(tokens) && Object.keys(tokens).length === 0)) {
    errors.push(
      err(
        "trainable_token_indices",
        `expected null (vLLM does not load trained token embeddings), found ${show(c.trainable_token_indices)}`,
      ),
    );
  }
  const useRslora = c.use_rslora === undefined || c.use_rslora === null ? false : c.use_rslora;
  if (typeof useRslora !== "boolean") {
    errors.push(err("use_rslora", `expected true or false, found ${show(c.use_rslora)}`));
  }
  const rankPattern = readPatterns("rank_pattern", c.rank_pattern, errors);
  const alphaPattern = readPatterns("alpha_pattern", c.alpha_pattern, errors);
  const patternCost = [...rankPattern, ...alphaPattern].reduce((sum, rule) => sum + rule.cost, 0);
  if (patternCost > MAX_CONFIG_REGEX_COST) {
    errors.push(
      err(
        "rank_pattern",
        `expected rank_pattern and alpha_pattern small enough to evaluate quickly, found ${rankPattern.length + alphaPattern.length} patterns too complex together`,
      ),
    );
  }
  const layersToTransform = readLayers(c.layers_to_transform, errors);
  if (layersToTransform !== null && targetModules?.kind === "regex") {
    errors.push(
      err(
        "layers_to_transform",
        "expected no layers_to_transform with a regex target_modules (PEFT refuses the pair)",
      ),
    );
  }
  const layersPattern = c.layers_pattern;
  if (
    !isEmptyish(layersPattern) &&
    layersPattern !== "layers" &&
    !(Array.isArray(layersPattern) && layersPattern.includes("layers"))
  ) {
    errors.push(
      err(
        "layers_pattern",
        `expected "layers" or absent (the decoder layers are model.layers), found ${show(layersPattern)}`,
      ),
    );
  }
  const name = c.base_model_name_or_path;
  if (!(name === undefined || name === null || typeof name === "string")) {
    errors.push(err("base_model_name_or_path", `expected a string or null, found ${show(name)}`));
  }

  if (r === null || loraAlpha === null || targetModules === null || patternCost > MAX_CONFIG_REGEX_COST) {
    return { config: null, errors };
  }
  return {
    config: {
      r,
      loraAlpha,
      targetModules,
      excludeModules,
      rankPattern,
      alphaPattern,
      useRslora: useRslora === true,
      layersToTransform,
      baseModelNameOrPath: typeof name === "string" && name !== "" ? name : null,
    },
    errors,
  };
}

function selects(selector: ModuleSelector, path: string): boolean {
  switch (selector.kind) {
    case "all-linear":
      return true;
    case "regex":
      return selector.regex.test(path);
    case "list":
      return selector.names.some((n) => path === n || path.endsWith(`.${n}`));
  }
}

function patternValue(rules: PatternRule[], path: string, fallback: number): number {
  return rules.find((rule) => rule.regex.test(path))?.value ?? fallback;
}

/** Whether PEFT would have put a LoRA on this module, given the config alone. */
export function isTargeted(config: LoraConfig, layer: number, module: LoraLinearModule): boolean {
  const path = modulePath(layer, module);
  if (config.excludeModules !== null && selects(config.excludeModules, path)) {
    return false;
  }
  if (config.layersToTransform !== null && !config.layersToTransform.includes(layer)) {
    return false;
  }
  return selects(config.targetModules, path);
}

/** Every (layer, module) of the base the config adapts, with per-module rank and alpha from the patterns. */
export function resolveLoraTargets(config: LoraConfig, base: BaseModelSpec): LoraTarget[] {
  const targets: LoraTarget[] = [];
  for (let layer = 0; layer < base.architecture.num_hidden_layers; layer++) {
    for (const module of LORA_LINEAR_MODULES) {
      if (isTargeted(config, layer, module)) {
        const path = modulePath(layer, module);
        targets.push({
          layer,
          module,
          rank: patternValue(config.rankPattern, path, config.r),
          alpha: patternValue(config.alphaPattern, path, config.loraAlpha),
        });
      }
    }
  }
  return targets;
}

/** The linear modules an entry or regex reaches in any layer of the base. */
function reachedModules(selector: ModuleSelector, layers: number): LoraLinearModule[] {
  return LORA_LINEAR_MODULES.filter((m) => {
    for (let layer = 0; layer < layers; layer++) {
      if (selects(selector, modulePath(layer, m))) {
        return true;
      }
    }
    return false;
  });
}

/** Checks the config against the base it will serve on: ranks, target modules, layers, and the model it was trained for. */
export function checkConfigAgainstBase(config: LoraConfig, base: BaseModelSpec): ValidationError[] {
  const errors: ValidationError[] = [];
  const maxRank = Math.min(base.loraMaxRank, VLLM_MAX_LORA_RANK);
  const why = `the max LoRA rank of base ${base.id}, which its replicas run with --max-lora-rank`;
  if (config.r > maxRank) {
    errors.push(err("r", `expected at most ${maxRank} (${why}), found ${config.r}`));
  }
  for (const rule of config.rankPattern) {
    if (rule.value > maxRank) {
      errors.push(
        err(`rank_pattern.${rule.key}`, `expected at most ${maxRank} (${why}), found ${rule.value}`),
      );
    }
  }

  const layers = base.architecture.num_hidden_layers;
  const allowed = base.loraTargetModules.filter(isLoraLinearModule);
  const allowedText = allowed.join(", ");
  const entries: { label: string; selector: ModuleSelector }[] =
    config.targetModules.kind === "list"
      ? config.targetModules.names.map((n) => ({
          label: JSON.stringify(n),
          selector: { kind: "list", names: [n] },
        }))
      : [
          {
            label:
              config.targetModules.kind === "regex"
                ? `regex ${JSON.stringify(config.targetModules.source)}`
                : '"all-linear"',
            selector: config.targetModules,
          },
        ];
  for (const { label, selector } of entries) {
    const reached = reachedModules(selector, layers);
    if (reached.length === 0) {
      errors.push(
        err(
          "target_modules",
          `expected modules among ${allowedText} (the LoRA targets of base ${base.id}), found ${label}, which matches none of them`,
        ),
      );
      continue;
    }
    const refused = reached.filter((m) => !allowed.includes(m));
    if (refused.length > 0) {
      errors.push(
        err(
          "target_modules",
          `expected modules among ${allowedText} (the LoRA targets of base ${base.id}), found ${label} reaching ${refused.join(", ")}`,
        ),
      );
    }
  }

  if (config.layersToTransform !== null) {
    const outside = config.layersToTransform.filter((l) => l >= layers);
    if (outside.length > 0) {
      errors.push(
        err(
          "layers_to_transform",
          `expected layer indices 0..${layers - 1} (base ${base.id} has ${layers} layers), found ${outside.join(", ")}`,
        ),
      );
    }
  }
  if (resolveLoraTargets(config, base).length === 0 && errors.length === 0) {
    errors.push(
      err(
        "target_modules",
        `expected the config to adapt at least one module of base ${base.id}, found none`,
      ),
    );
  }

  if (config.baseModelNameOrPath !== null) {
    const mismatch = familyMismatch(config.baseModelNameOrPath, base.hfName);
    if (mismatch !== null) {
      errors.push(err("base_model_name_or_path", mismatch));
    }
  }
  return errors;
}
