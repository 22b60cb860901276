import { describe, expect, it } from "vitest";
import { tinyBase } from "../../test/fixtures/generate.ts";
import { type BaseModelSpec, SEEDED_BASE_MODELS } from "./base-spec.ts";
import {
  checkConfigAgainstBase,
  isTargeted,
  type LoraConfig,
  parsePeftConfig,
  resolveLoraTargets,
} from "./peft-config.ts";

/** As PEFT 0.17 writes it (save_pretrained sorts the keys). */
const PEFT_017 = `{
  "alpha_pattern": {},
  "auto_mapping": null,
  "base_model_name_or_path": "meta-llama/Llama-3.1-8B-Instruct",
  "bias": "none",
  "corda_config": null,
  "eva_config": null,
  "exclude_modules": null,
  "fan_in_fan_out": false,
  "inference_mode": true,
  "init_lora_weights": true,
  "layer_replication": null,
  "layers_pattern": null,
  "layers_to_transform": null,
  "loftq_config": {},
  "lora_alpha": 32,
  "lora_bias": false,
  "lora_dropout": 0.05,
  "megatron_config": null,
  "megatron_core": "megatron.core",
  "modules_to_save": null,
  "peft_type": "LORA",
  "qalora_group_size": 16,
  "r": 16,
  "rank_pattern": {},
  "revision": null,
  "target_modules": ["v_proj", "q_proj"],
  "target_parameters": null,
  "task_type": "CAUSAL_LM",
  "trainable_token_indices": null,
  "use_dora": false,
  "use_qalora": false,
  "use_rslora": false
}`;

const LLAMA = SEEDED_BASE_MODELS[1] as BaseModelSpec;
const QWEN = SEEDED_BASE_MODELS[0] as BaseModelSpec;

function minimal(fields: Record<string, unknown> = {}): string {
  const config: Record<string, unknown> = {
    peft_type: "LORA",
    r: 8,
    lora_alpha: 16,
    target_modules: ["q_proj", "v_proj"],
    ...fields,
  };
  for (const [key, value] of Object.entries(config)) {
    if (value === undefined) {
      delete config[key];
    }
  }
  return JSON.stringify(config);
}

function lines(text: string): string[] {
  return parsePeftConfig(text).errors.map((e) => `${e.path}: ${e.message}`);
}

function config(fields: Record<string, unknown> = {}): LoraConfig {
  const parsed = parsePeftConfig(minimal(fields));
  if (parsed.config === null || parsed.errors.length > 0) {
    throw new Error(JSON.stringify(parsed.errors));
  }
  return parsed.config;
}

function againstBase(fields: Record<string, unknown>, base: BaseModelSpec = LLAMA): string[] {
  return checkConfigAgainstBase(config(fields), base).map((e) => `${e.path}: ${e.message}`);
}

describe("parsePeftConfig", () => {
  it("reads a config written by PEFT 0.17, ignoring the fields vLLM ignores", () => {
    const { config, errors } = parsePeftConfig(PEFT_017);
    expect(errors).toEqual([]);
    expect(config).toMatchObject({
      r: 16,
      loraAlpha: 32,
      targetModules: { kind: "list", names: ["v_proj", "q_proj"] },
      excludeModules: null,
      rankPattern: [],
      alphaPattern: [],
      useRslora: false,
      layersToTransform: null,
      baseModelNameOrPath: "meta-llama/Llama-3.1-8B-Instruct",
    });
  });

  it("accepts the minimum vLLM reads: peft_type, r, lora_alpha and target_modules", () => {
    expect(lines(minimal())).toEqual([]);
  });

  it("records use_rslora", () => {
    expect(config({ use_rslora: true }).useRslora).toBe(true);
    expect(lines(minimal({ use_rslora: "yes" }))).toEqual([
      'adapter_config:use_rslora: expected true or false, found "yes"',
    ]);
  });

  it("rejects text that is not JSON, pointing out a byte-order mark", () => {
    expect(lines("{r: 8}")[0]).toMatch(/^adapter_config: expected a JSON object, found invalid JSON: /);
    expect(lines(`\uFEFF${minimal()}`)[0]).toMatch(
      /found invalid JSON \(it starts with a UTF-8 byte-order mark\)/,
    );
  });

  it("rejects JSON that is not an object", () => {
    expect(lines("[1]")).toEqual(["adapter_config: expected a JSON object, found an array"]);
    expect(lines('"LORA"')).toEqual(['adapter_config: expected a JSON object, found "LORA"']);
  });

  it.each([
    [{ peft_type: "LOHA" }, 'adapter_config:peft_type: expected "LORA", found "LOHA"'],
    [{ peft_type: undefined }, 'adapter_config:peft_type: expected "LORA", found nothing (field missing)'],
    [{ r: 0 }, "adapter_config:r: expected a positive integer rank, found 0"],
    [{ r: 8.5 }, "adapter_config:r: expected a positive integer rank, found 8.5"],
    [{ r: "8" }, 'adapter_config:r: expected a positive integer rank, found "8"'],
    [{ r: undefined }, "adapter_config:r: expected a positive integer rank, found nothing (field missing)"],
    [{ lora_alpha: "16" }, 'adapter_config:lora_alpha: expected a positive number, found "16"'],
    [{ lora_alpha: 0 }, "adapter_config:lora_alpha: expected a positive number, found 0"],
    [
      { target_modules: [] },
      "adapter_config:target_modules: expected a non-empty list of module names (or a regex string), found []",
    ],
    [
      { target_modules: ["q_proj", 3] },
      'adapter_config:target_modules: expected a non-empty list of module names (or a regex string), found ["q_proj",3]',
    ],
    [
      { target_modules: undefined },
      "adapter_config:target_modules: expected a non-empty list of module names (or a regex string), found nothing (field missing)",
    ],
    [
      { use_dora: true },
      "adapter_config:use_dora: expected false or absent (vLLM does not support DoRA), found true",
    ],
    [
      { modules_to_save: ["lm_head", "embed_tokens"] },
      'adapter_config:modules_to_save: expected null or [] (vLLM serves only the LoRA deltas, not fully trained modules), found ["lm_head","embed_tokens"]',
    ],
    [
      { bias: "all" },
      'adapter_config:bias: expected "none" (vLLM does not load trained biases), found "all"',
    ],
    [
      { lora_bias: true },
      "adapter_config:lora_bias: expected false or absent (vLLM does not load lora_B biases), found true",
    ],
    [
      { target_parameters: ["experts.gate_up_proj"] },
      'adapter_config:target_parameters: expected null or [] (vLLM adapts modules, not parameters), found ["experts.gate_up_proj"]',
    ],
    [
      { trainable_token_indices: [1, 2] },
      "adapter_config:trainable_token_indices: expected null (vLLM does not load trained token embeddings), found [1,2]",
    ],
    [
      { layers_to_transform: [] },
      "adapter_config:layers_to_transform: expected a layer index or a non-empty list of layer indices, found []",
    ],
    [
      { layers_to_transform: [-1] },
      "adapter_config:layers_to_transform: expected a layer index or a non-empty list of layer indices, found [-1]",
    ],
    [
      { layers_pattern: "h" },
      'adapter_config:layers_pattern: expected "layers" or absent (the decoder layers are model.layers), found "h"',
    ],
    [
      { base_model_name_or_path: 7 },
      "adapter_config:base_model_name_or_path: expected a string or null, found 7",
    ],
    [
      { rank_pattern: { q_proj: 0 } },
      "adapter_config:rank_pattern.q_proj: expected a positive integer rank, found 0",
    ],
    [
      { rank_pattern: [8] },
      "adapter_config:rank_pattern: expected an object of module pattern → number, found [8]",
    ],
    [
      { alpha_pattern: { v_proj: "x" } },
      'adapter_config:alpha_pattern.v_proj: expected a positive number, found "x"',
    ],
  ])("rejects %j", (fields, message) => {
    expect(lines(minimal(fields))).toEqual([message]);
  });

  it("accepts the empty forms of optional fields", () => {
    expect(
      lines(
        minimal({
          use_dora: null,
          modules_to_save: [],
          bias: "none",
          lora_bias: null,
          target_parameters: [],
          trainable_token_indices: {},
          layers_pattern: ["layers"],
          base_model_name_or_path: null,
          exclude_modules: [],
        }),
      ),
    ).toEqual([]);
  });

  it("reports every problem at once, not only the first", () => {
    expect(
      parsePeftConfig(minimal({ peft_type: "IA3", r: -1, use_dora: true, bias: "all" })).errors.map(
        (e) => e.path,
      ),
    ).toEqual([
      "adapter_config:peft_type",
      "adapter_config:r",
      "adapter_config:use_dora",
      "adapter_config:bias",
    ]);
  });

  it("still returns the config when only unsupported features are wrong, so the tensors can be checked too", () => {
    expect(parsePeftConfig(minimal({ use_dora: true })).config?.r).toBe(8);
    expect(parsePeftConfig(minimal({ r: undefined })).config).toBeNull();
  });

  it("takes a single layers_to_transform index, as PEFT allows", () => {
    expect(config({ layers_to_transform: 3 }).layersToTransform).toEqual([3]);
  });

  it("refuses layers_to_transform together with a regex target_modules, as PEFT does", () => {
    expect(lines(minimal({ target_modules: String.raw`.*\.q_proj`, layers_to_transform: [0] }))).toEqual([
      "adapter_config:layers_to_transform: expected no layers_to_transform with a regex target_modules (PEFT refuses the pair)",
    ]);
  });

  it("explains a regex target_modules it will not run", () => {
    expect(lines(minimal({ target_modules: "(.*)+q_proj" }))).toEqual([
      'adapter_config:target_modules: expected a list of module names or a regex over module paths; regex "(.*)+q_proj" is not accepted: quantified groups such as (...)* or (...)+ are not supported',
    ]);
  });

  it("accepts a rank_pattern that lists every module of a large model by path", () => {
    const keys = Array.from({ length: 80 * 7 }, (_, i) => [
      `model.layers.${Math.floor(i / 7)}.self_attn.m${i % 7}`,
      4,
    ]);
    expect(lines(minimal({ rank_pattern: Object.fromEntries(keys) }))).toEqual([]);
  });

  it("refuses pattern sets too costly to evaluate together, and gives up on the config's shapes", () => {
    const keys = Array.from({ length: 20 }, (_, i) => [`.*x${i}.*y`, 4]);
    const parsed = parsePeftConfig(minimal({ rank_pattern: Object.fromEntries(keys) }));
    expect(parsed.errors.map((e) => `${e.path}: ${e.message}`)).toEqual([
      "adapter_config:rank_pattern: expected rank_pattern and alpha_pattern small enough to evaluate quickly, found 20 patterns too complex together",
    ]);
    expect(parsed.config).toBeNull();
  });

  it("explains a rank_pattern key that is not a usable regex", () => {
    expect(lines(minimal({ rank_pattern: { "q_proj(": 4 } }))[0]).toMatch(
      /^adapter_config:rank_pattern\.q_proj\(: expected a module name or pattern; regex "q_proj\(" is not accepted: unbalanced parentheses$/,
    );
  });
});

describe("resolveLoraTargets", () => {
  const base = tinyBase(LLAMA, { num_hidden_layers: 3 });
  const pairs = (c: LoraConfig) => resolveLoraTargets(c, base).map((t) => `${t.layer}.${t.module}`);

  it("targets every listed module in every layer", () => {
    expect(pairs(config())).toEqual(["0.q_proj", "0.v_proj", "1.q_proj", "1.v_proj", "2.q_proj", "2.v_proj"]);
  });

  it("matches list entries like PEFT: equal to the path or a dotted suffix of it", () => {
    expect(pairs(config({ target_modules: ["self_attn.q_proj", "layers.2.mlp.down_proj"] }))).toEqual([
      "0.q_proj",
      "1.q_proj",
      "2.q_proj",
      "2.down_proj",
    ]);
    expect(pairs(config({ target_modules: ["proj"] }))).toEqual([]);
  });

  it("full-matches a regex target_modules against module paths", () => {
    expect(pairs(config({ target_modules: String.raw`model\.layers\.[01]\.mlp\.(up|down)_proj` }))).toEqual([
      "0.up_proj",
      "0.down_proj",
      "1.up_proj",
      "1.down_proj",
    ]);
  });

  it("expands all-linear to the seven linear modules", () => {
    expect(pairs(config({ target_modules: "all-linear" })).filter((p) => p.startsWith("0."))).toEqual([
      "0.q_proj",
      "0.k_proj",
      "0.v_proj",
      "0.o_proj",
      "0.gate_proj",
      "0.up_proj",
      "0.down_proj",
    ]);
  });

  it("honours layers_to_transform and exclude_modules", () => {
    expect(pairs(config({ layers_to_transform: [2, 0] }))).toEqual([
      "0.q_proj",
      "0.v_proj",
      "2.q_proj",
      "2.v_proj",
    ]);
    expect(pairs(config({ exclude_modules: ["layers.1.self_attn.v_proj"] }))).toEqual([
      "0.q_proj",
      "0.v_proj",
      "1.q_proj",
      "2.q_proj",
      "2.v_proj",
    ]);
    expect(pairs(config({ exclude_modules: String.raw`.*\.[12]\..*` }))).toEqual(["0.q_proj", "0.v_proj"]);
    expect(isTargeted(config({ layers_to_transform: [1] }), 0, "q_proj")).toBe(false);
  });

  it("gives per-module ranks and alphas from the patterns, first matching key winning", () => {
    const targets = resolveLoraTargets(
      config({
        rank_pattern: { "layers.0.self_attn.q_proj": 4, q_proj: 12 },
        alpha_pattern: { v_proj: 64 },
      }),
      base,
    );
    expect(targets.slice(0, 4)).toEqual([
      { layer: 0, module: "q_proj", rank: 4, alpha: 16 },
      { layer: 0, module: "v_proj", rank: 8, alpha: 64 },
      { layer: 1, module: "q_proj", rank: 12, alpha: 16 },
      { layer: 1, module: "v_proj", rank: 8, alpha: 64 },
    ]);
  });
});

describe("checkConfigAgainstBase", () => {
  it("accepts a rank equal to the base's max", () => {
    expect(againstBase({ r: 64 })).toEqual([]);
  });

  it("rejects a rank above the base's max LoRA rank", () => {
    expect(againstBase({ r: 128 })).toEqual([
      "adapter_config:r: expected at most 64 (the max LoRA rank of base llama-3.1-8b-instruct-awq, which its replicas run with --max-lora-rank), found 128",
    ]);
  });

  it("rejects a rank_pattern rank above the base's max", () => {
    expect(againstBase({ rank_pattern: { v_proj: 96 } })).toEqual([
      "adapter_config:rank_pattern.v_proj: expected at most 64 (the max LoRA rank of base llama-3.1-8b-instruct-awq, which its replicas run with --max-lora-rank), found 96",
    ]);
  });

  it("caps the rank at vLLM's largest --max-lora-rank even when the base allows more", () => {
    expect(againstBase({ r: 1024 }, { ...LLAMA, loraMaxRank: 2048 })[0]).toMatch(
      /^adapter_config:r: expected at most 512 /,
    );
  });

  it("rejects a target module that is not a LoRA target of the base", () => {
    expect(againstBase({ target_modules: ["q_proj", "lm_head"] })).toEqual([
      'adapter_config:target_modules: expected modules among q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (the LoRA targets of base llama-3.1-8b-instruct-awq), found "lm_head", which matches none of them',
    ]);
  });

  it("rejects a module the base's LoRA config leaves out", () => {
    const attentionOnly = { ...LLAMA, loraTargetModules: ["q_proj", "k_proj", "v_proj", "o_proj"] };
    expect(againstBase({ target_modules: ["q_proj", "gate_proj"] }, attentionOnly)).toEqual([
      'adapter_config:target_modules: expected modules among q_proj, k_proj, v_proj, o_proj (the LoRA targets of base llama-3.1-8b-instruct-awq), found "gate_proj" reaching gate_proj',
    ]);
    expect(againstBase({ target_modules: "all-linear" }, attentionOnly)[0]).toMatch(
      /found "all-linear" reaching gate_proj, up_proj, down_proj$/,
    );
  });

  it("rejects a regex target_modules that matches nothing", () => {
    expect(againstBase({ target_modules: String.raw`.*\.c_attn` })[0]).toMatch(
      /^adapter_config:target_modules: expected modules among .*found regex ".\*\\\\.c_attn", which matches none of them$/,
    );
  });

  it("rejects layers_to_transform beyond the base's layers", () => {
    expect(againstBase({ layers_to_transform: [0, 31, 32, 40] })).toEqual([
      "adapter_config:layers_to_transform: expected layer indices 0..31 (base llama-3.1-8b-instruct-awq has 32 layers), found 32, 40",
    ]);
  });

  it("rejects a config that ends up adapting nothing", () => {
    expect(againstBase({ exclude_modules: ["q_proj", "v_proj"] })).toEqual([
      "adapter_config:target_modules: expected the config to adapt at least one module of base llama-3.1-8b-instruct-awq, found none",
    ]);
  });

  it("accepts the full-precision repo of an AWQ base, and unknown or missing names", () => {
    expect(againstBase({ base_model_name_or_path: "meta-llama/Llama-3.1-8B-Instruct" })).toEqual([]);
    expect(againstBase({ base_model_name_or_path: "meta-llama/Meta-Llama-3.1-8B-Instruct" })).toEqual([]);
    expect(againstBase({ base_model_name_or_path: "Qwen/Qwen2.5-7B-Instruct" }, QWEN)).toEqual([]);
    expect(againstBase({ base_model_name_or_path: "./outputs/merged" })).toEqual([]);
    expect(againstBase({ base_model_name_or_path: null })).toEqual([]);
  });

  it("rejects an adapter trained for another model family", () => {
    expect(againstBase({ base_model_name_or_path: "meta-llama/Llama-3.1-8B-Instruct" }, QWEN)).toEqual([
      'adapter_config:base_model_name_or_path: expected the base model "Qwen/Qwen2.5-7B-Instruct-AWQ" (qwen 2.5 7b) or its full-precision repo, found "meta-llama/Llama-3.1-8B-Instruct" (llama 3.1 8b): the adapter was trained for a different model',
    ]);
  });
});
