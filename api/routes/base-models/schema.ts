import { z } from "@hono/zod-openapi";
import type { BaseModelRow, NewBaseModel } from "../../../db/index.ts";
import { microsToUsd, UsdAmount, usdToMicros } from "../common.ts";

const dim = z.number().int().positive().max(1_000_000);
/** Ranks vLLM accepts for --max-lora-rank. */
export const VLLM_LORA_RANKS = [1, 8, 16, 32, 64, 128, 256, 320, 512] as const;

export const BaseModelId = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9._-]{0,127}$/,
    "lowercase letters, digits, '.', '_' and '-', starting alphanumeric",
  );

export const BaseModelBody = z
  .strictObject({
    id: BaseModelId,
    hf_name: z.string().min(1).max(300),
    quantization: z.enum(["awq", "awq_marlin", "gptq", "fp8", "none"]),
    architecture: z.strictObject({
      hidden_size: dim,
      intermediate_size: dim,
      num_hidden_layers: z.number().int().positive().max(1000),
      num_attention_heads: z.number().int().positive().max(10_000),
      num_key_value_heads: z.number().int().positive().max(10_000),
      head_dim: dim.optional(),
      vocab_size: z.number().int().positive().max(10_000_000),
      max_position_embeddings: z
        .number()
        .int()
        .positive()
        .max(100_000_000)
        .optional()
        .openapi({
          description:
            "The context window in tokens (config.json's max_position_embeddings, or the replicas' --max-model-len " +
            "if larger): budget reservations for requests without max_tokens assume it. Default 131072.",
        }),
    }),
    lora: z.strictObject({
      max_rank: z
        .number()
        .int()
        .refine((r) => (VLLM_LORA_RANKS as readonly number[]).includes(r), {
          message: `must be one of vLLM's ranks: ${VLLM_LORA_RANKS.join(", ")}`,
        }),
      target_modules: z
        .array(z.string().regex(/^[a-z_][a-z0-9_]*$/))
        .min(1)
        .max(32),
    }),
    price: z.strictObject({ input_per_mtok_usd: UsdAmount, output_per_mtok_usd: UsdAmount }),
  })
  .refine((b) => b.architecture.num_attention_heads % b.architecture.num_key_value_heads === 0, {
    message: "num_attention_heads must be a multiple of num_key_value_heads",
    path: ["architecture", "num_key_value_heads"],
  })
  .openapi("BaseModelInput");

export type BaseModelInput = z.infer<typeof BaseModelBody>;

export const BaseModel = z
  .object({
    id: z.string(),
    hf_name: z.string(),
    quantization: z.string(),
    architecture: z.object({
      hidden_size: z.number(),
      intermediate_size: z.number(),
      num_hidden_layers: z.number(),
      num_attention_heads: z.number(),
      num_key_value_heads: z.number(),
      head_dim: z.number().optional(),
      vocab_size: z.number(),
      max_position_embeddings: z.number().optional(),
    }),
    lora: z.object({ max_rank: z.number(), target_modules: z.array(z.string()) }),
    price: z.object({ input_per_mtok_usd: z.number(), output_per_mtok_usd: z.number() }),
    created_at: z.string(),
  })
  .openapi("BaseModel");

export function baseModelFromBody(body: BaseModelInput): NewBaseModel {
  return {
    id: body.id,
    hfName: body.hf_name,
    quantization: body.quantization,
    architecture: body.architecture,
    loraMaxRank: body.lora.max_rank,
    loraTargetModules: body.lora.target_modules,
    inputMicrosPerMtok: Number(usdToMicros(body.price.input_per_mtok_usd)),
    outputMicrosPerMtok: Number(usdToMicros(body.price.output_per_mtok_usd)),
  };
}

export function toBaseModelDto(row: BaseModelRow): z.infer<typeof BaseModel> {
  return {
    id: row.id,
    hf_name: row.hfName,
    quantization: row.quantization,
    architecture: row.architecture,
    lora: { max_rank: row.loraMaxRank, target_modules: row.loraTargetModules },
    price: {
      input_per_mtok_usd: microsToUsd(row.inputMicrosPerMtok),
      output_per_mtok_usd: microsToUsd(row.outputMicrosPerMtok),
    },
    created_at: row.createdAt.toISOString(),
  };
}
