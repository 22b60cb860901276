export interface BaseModelArchitectureSpec {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim?: number | undefined;
  vocab_size: number;
  /** The longest sequence (prompt + completion) the model takes: what a replica's max_model_len defaults to. */
  max_position_embeddings?: number | undefined;
}

/** What validation needs to know about a base model; mirrors the `base_models` row. */
export interface BaseModelSpec {
  id: string;
  hfName: string;
  quantization: string;
  architecture: BaseModelArchitectureSpec;
  loraMaxRank: number;
  loraTargetModules: string[];
}

/** The LoRA-capable linear layers of a Llama-style decoder layer (Llama, Qwen2, Mistral), in PEFT order. */
export const LORA_LINEAR_MODULES = [
  "q_proj",
  "k_proj",
  "v_proj",
  "o_proj",
  "gate_proj",
  "up_proj",
  "down_proj",
] as const;

export type LoraLinearModule = (typeof LORA_LINEAR_MODULES)[number];

export type ModuleGroup = "self_attn" | "mlp";

export interface ModuleDims {
  group: ModuleGroup;
  inFeatures: number;
  outFeatures: number;
  /** How the dims derive from the architecture, for error messages, e.g. "hidden_size → heads×head_dim". */
  formula: string;
}

export function isLoraLinearModule(name: string): name is LoraLinearModule {
  return (LORA_LINEAR_MODULES as readonly string[]).includes(name);
}

export function moduleGroup(module: LoraLinearModule): ModuleGroup {
  return module === "gate_proj" || module === "up_proj" || module === "down_proj" ? "mlp" : "self_attn";
}

/** HF config default: head_dim = hidden_size / num_attention_heads when the config does not set it. */
export function headDim(arch: BaseModelArchitectureSpec): number {
  return arch.head_dim ?? Math.floor(arch.hidden_size / arch.num_attention_heads);
}

export function moduleDims(arch: BaseModelArchitectureSpec, module: LoraLinearModule): ModuleDims {
  const hidden = arch.hidden_size;
  const qOut = arch.num_attention_heads * headDim(arch);
  const kvOut = arch.num_key_value_heads * headDim(arch);
  switch (module) {
    case "q_proj":
      return {
        group: "self_attn",
        inFeatures: hidden,
        outFeatures: qOut,
        formula: "hidden_size → heads×head_dim",
      };
    case "k_proj":
    case "v_proj":
      return {
        group: "self_attn",
        inFeatures: hidden,
        outFeatures: kvOut,
        formula: "hidden_size → kv_heads×head_dim",
      };
    case "o_proj":
      return {
        group: "self_attn",
        inFeatures: qOut,
        outFeatures: hidden,
        formula: "heads×head_dim → hidden_size",
      };
    case "gate_proj":
    case "up_proj":
      return {
        group: "mlp",
        inFeatures: hidden,
        outFeatures: arch.intermediate_size,
        formula: "hidden_size → intermediate_size",
      };
    case "down_proj":
      return {
        group: "mlp",
        inFeatures: arch.intermediate_size,
        outFeatures: hidden,
        formula: "intermediate_size → hidden_size",
      };
  }
}

/** The module's path inside the HF model, as PEFT matches target_modules against it. */
export function modulePath(layer: number, module: LoraLinearModule): string {
  return `model.layers.${layer}.${moduleGroup(module)}.${module}`;
}

/** The tensor name PEFT saves for a LoRA weight: `base_model.model.` + the HF module path. */
export function loraTensorName(layer: number, module: LoraLinearModule, ab: "A" | "B"): string {
  return `base_model.model.${modulePath(layer, module)}.lora_${ab}.weight`;
}

const ALL_LINEAR = [...LORA_LINEAR_MODULES];

/** The AWQ bases the project seeds, with their true dimensions (from each repo's config.json). */
export const SEEDED_BASE_MODELS: readonly BaseModelSpec[] = [
  {
    id: "qwen2.5-7b-instruct-awq",
    hfName: "Qwen/Qwen2.5-7B-Instruct-AWQ",
    quantization: "awq",
    architecture: {
      hidden_size: 3584,
      intermediate_size: 18944,
      num_hidden_layers: 28,
      num_attention_heads: 28,
      num_key_value_heads: 4,
      head_dim: 128,
      vocab_size: 152064,
      max_position_embeddings: 32768,
    },
    loraMaxRank: 64,
    loraTargetModules: ALL_LINEAR,
  },
  {
    id: "llama-3.1-8b-instruct-awq",
    hfName: "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
    quantization: "awq",
    architecture: {
      hidden_size: 4096,
      intermediate_size: 14336,
      num_hidden_layers: 32,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      head_dim: 128,
      vocab_size: 128256,
      max_position_embeddings: 131072,
    },
    loraMaxRank: 64,
    loraTargetModules: ALL_LINEAR,
  },
  {
    id: "mistral-7b-instruct-v0.3-awq",
    hfName: "solidrust/Mistral-7B-Instruct-v0.3-AWQ",
    quantization: "awq",
    architecture: {
      hidden_size: 4096,
      intermediate_size: 14336,
      num_hidden_layers: 32,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      head_dim: 128,
      vocab_size: 32768,
      max_position_embeddings: 32768,
    },
    loraMaxRank: 64,
    loraTargetModules: ALL_LINEAR,
  },
];
