import type { BaseModelInput } from "./schema.ts";

const ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/** Well-known AWQ bases with the dimensions from their published config.json. */
export const SEED_BASE_MODELS: BaseModelInput[] = [
  {
    id: "qwen2.5-7b-instruct-awq",
    hf_name: "Qwen/Qwen2.5-7B-Instruct-AWQ",
    quantization: "awq_marlin",
    architecture: {
      hidden_size: 3584,
      intermediate_size: 18944,
      num_hidden_layers: 28,
      num_attention_heads: 28,
      num_key_value_heads: 4,
      head_dim: 128,
      vocab_size: 152064,
    },
    lora: { max_rank: 64, target_modules: ALL_LINEAR },
    price: { input_per_mtok_usd: 0.1, output_per_mtok_usd: 0.3 },
  },
  {
    id: "llama-3.1-8b-instruct-awq",
    hf_name: "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
    quantization: "awq_marlin",
    architecture: {
      hidden_size: 4096,
      intermediate_size: 14336,
      num_hidden_layers: 32,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      head_dim: 128,
      vocab_size: 128256,
    },
    lora: { max_rank: 64, target_modules: ALL_LINEAR },
    price: { input_per_mtok_usd: 0.12, output_per_mtok_usd: 0.36 },
  },
  {
    id: "mistral-7b-instruct-v0.3-awq",
    hf_name: "solidrust/Mistral-7B-Instruct-v0.3-AWQ",
    quantization: "awq_marlin",
    architecture: {
      hidden_size: 4096,
      intermediate_size: 14336,
      num_hidden_layers: 32,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      head_dim: 128,
      vocab_size: 32768,
    },
    lora: { max_rank: 64, target_modules: ALL_LINEAR },
    price: { input_per_mtok_usd: 0.1, output_per_mtok_usd: 0.3 },
  },
];
