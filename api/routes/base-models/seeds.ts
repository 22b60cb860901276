import { SEEDED_BASE_MODELS } from "../../../adapters/index.ts";
import type { BaseModelInput } from "./schema.ts";

/** What tenants pay per million tokens on each seeded base (USD). */
const PRICES: Record<string, BaseModelInput["price"]> = {
  "qwen2.5-7b-instruct-awq": { input_per_mtok_usd: 0.1, output_per_mtok_usd: 0.3 },
  "llama-3.1-8b-instruct-awq": { input_per_mtok_usd: 0.12, output_per_mtok_usd: 0.36 },
  "mistral-7b-instruct-v0.3-awq": { input_per_mtok_usd: 0.1, output_per_mtok_usd: 0.3 },
};
const DEFAULT_PRICE = { input_per_mtok_usd: 0.1, output_per_mtok_usd: 0.3 };

/** The well-known AWQ bases, with the true dimensions the validator checks adapters against. */
export const SEED_BASE_MODELS: BaseModelInput[] = SEEDED_BASE_MODELS.map((base) => ({
  id: base.id,
  hf_name: base.hfName,
  quantization: base.quantization === "awq_marlin" ? "awq_marlin" : "awq",
  architecture: base.architecture,
  lora: { max_rank: base.loraMaxRank, target_modules: [...base.loraTargetModules] },
  price: PRICES[base.id] ?? DEFAULT_PRICE,
}));
