import { bigint, integer, jsonb, pgTable, text } from "drizzle-orm/pg-core";
import { fallbackUpstream, timestamps } from "./columns.ts";

export interface BaseModelArchitecture {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim?: number | undefined;
  vocab_size: number;
  /** The context window (prompt + completion); absent on bases registered before it was asked for. */
  max_position_embeddings?: number | undefined;
}

/** The shared, quantized bases adapters attach to. Prices are micro-dollars per million tokens. */
export const baseModels = pgTable("base_models", {
  id: text().primaryKey(),
  hfName: text().notNull(),
  quantization: text().notNull(),
  architecture: jsonb().$type<BaseModelArchitecture>().notNull(),
  loraMaxRank: integer().notNull(),
  loraTargetModules: text().array().notNull(),
  inputMicrosPerMtok: bigint({ mode: "number" }).notNull(),
  outputMicrosPerMtok: bigint({ mode: "number" }).notNull(),
  /** Serves this base's requests when no replica can in time, for tenants without a fallback of their own. */
  fallback: fallbackUpstream(),
  ...timestamps(),
});
