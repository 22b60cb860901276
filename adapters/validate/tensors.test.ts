import { describe, expect, it } from "vitest";
import {
  ALL_LINEAR_MODULES,
  adapterConfig,
  adapterTensorSpecs,
  encodeHeader,
  safetensorsLayout,
  type TensorSpec,
  tinyBase,
} from "../../test/fixtures/generate.ts";
import {
  type BaseModelSpec,
  type LoraLinearModule,
  loraTensorName,
  SEEDED_BASE_MODELS,
} from "./base-spec.ts";
import { type LoraConfig, parsePeftConfig } from "./peft-config.ts";
import { parseSafetensorsHeader, type SafetensorsHeader } from "./safetensors.ts";
import { checkAdapterTensors } from "./tensors.ts";

/** hidden 64, intermediate 160, 2 layers, 4 heads, 2 kv heads, head_dim 16: q out 64, k/v out 32. */
const BASE = tinyBase(SEEDED_BASE_MODELS[1] as BaseModelSpec);

function header(specs: TensorSpec[]): SafetensorsHeader {
  const { headerBytes, dataSize } = safetensorsLayout(specs);
  const parsed = parseSafetensorsHeader(headerBytes, headerBytes.length + dataSize);
  if (parsed.header === null || parsed.errors.length > 0) {
    throw new Error(JSON.stringify(parsed.errors));
  }
  return parsed.header;
}

function config(fields: Record<string, unknown> = {}): LoraConfig {
  const parsed = parsePeftConfig(JSON.stringify({ ...adapterConfig(BASE), ...fields }));
  if (parsed.config === null) {
    throw new Error(JSON.stringify(parsed.errors));
  }
  return parsed.config;
}

function check(specs: TensorSpec[], cfg: LoraConfig | null = config(), base: BaseModelSpec = BASE): string[] {
  return checkAdapterTensors(header(specs), base, cfg).errors.map((e) => `${e.path}: ${e.message}`);
}

const QV = adapterTensorSpecs(BASE);
const name = (layer: number, module: LoraLinearModule, ab: "A" | "B") => loraTensorName(layer, module, ab);
const path = (layer: number, module: LoraLinearModule, ab: "A" | "B") =>
  `adapter_model:${name(layer, module, ab)}`;

function replace(specs: TensorSpec[], target: string, change: Partial<TensorSpec>): TensorSpec[] {
  return specs.map((s) => (s.name === target ? { ...s, ...change } : s));
}

describe("checkAdapterTensors", () => {
  it("accepts PEFT's layout for q_proj + v_proj and reports the dtype", () => {
    expect(checkAdapterTensors(header(QV), BASE, config())).toEqual({ errors: [], dtype: "F16" });
  });

  it("accepts every linear module at its own shape", () => {
    const specs = adapterTensorSpecs(BASE, { targetModules: ALL_LINEAR_MODULES, dtype: "BF16" });
    const cfg = config({ target_modules: [...ALL_LINEAR_MODULES] });
    expect(checkAdapterTensors(header(specs), BASE, cfg)).toEqual({ errors: [], dtype: "BF16" });
  });

  it.each([
    ["q_proj", [8, 64], [64, 8]],
    ["k_proj", [8, 64], [32, 8]],
    ["v_proj", [8, 64], [32, 8]],
    ["o_proj", [8, 64], [64, 8]],
    ["gate_proj", [8, 64], [160, 8]],
    ["up_proj", [8, 64], [160, 8]],
    ["down_proj", [8, 160], [64, 8]],
  ] as const)("expects %s A = %j and B = %j", (module, a, b) => {
    const cfg = config({ target_modules: [module] });
    const good = [
      { name: name(0, module, "A"), dtype: "F16", shape: [...a] },
      { name: name(0, module, "B"), dtype: "F16", shape: [...b] },
      { name: name(1, module, "A"), dtype: "F16", shape: [...a] },
      { name: name(1, module, "B"), dtype: "F16", shape: [...b] },
    ];
    expect(check(good, cfg)).toEqual([]);
    const wrongB = replace(good, name(1, module, "B"), { shape: [b[0] + 16, 8] });
    expect(check(wrongB, cfg)).toEqual([
      `${path(1, module, "B")}: shape: expected [${b[0]}, 8] ([out_features, r], ${module} out_features = ${b[0]}, r = 8), found [${b[0] + 16}, 8]`,
    ]);
    const wrongA = replace(good, name(0, module, "A"), { shape: [8, a[1] * 2] });
    expect(check(wrongA, cfg)).toEqual([
      `${path(0, module, "A")}: shape: expected [8, ${a[1]}] ([r, in_features], ${module} in_features = ${a[1]}, r = 8), found [8, ${a[1] * 2}]`,
    ]);
  });

  it("rejects a rank that differs from the config's r", () => {
    const specs = adapterTensorSpecs(BASE, { rank: 16 });
    expect(check(specs).filter((l) => l.includes("layers.0.self_attn.q_proj"))).toEqual([
      `${path(0, "q_proj", "A")}: shape: expected [8, 64] ([r, in_features], q_proj in_features = 64, r = 8), found [16, 64]`,
      `${path(0, "q_proj", "B")}: shape: expected [64, 8] ([out_features, r], q_proj out_features = 64, r = 8), found [64, 16]`,
    ]);
  });

  it("rejects a 1-D or 3-D tensor", () => {
    expect(check(replace(QV, name(0, "q_proj", "A"), { shape: [512] }))).toEqual([
      `${path(0, "q_proj", "A")}: shape: expected [8, 64] ([r, in_features], q_proj in_features = 64, r = 8), found [512]`,
    ]);
    expect(check(replace(QV, name(0, "q_proj", "A"), { shape: [1, 8, 64] }))).toHaveLength(1);
  });

  it("derives head_dim from hidden_size / heads when the base does not set it", () => {
    const noHeadDim = tinyBase(BASE, {
      head_dim: undefined,
      hidden_size: 96,
      num_attention_heads: 4,
      num_key_value_heads: 1,
    });
    const specs = adapterTensorSpecs(noHeadDim);
    expect(specs.find((s) => s.name === name(0, "v_proj", "B"))?.shape).toEqual([24, 8]);
    expect(check(specs, config(), noHeadDim)).toEqual([]);
  });

  it("uses head_dim when it differs from hidden_size / heads", () => {
    const wideHeads = tinyBase(BASE, { head_dim: 32 });
    expect(check(QV, config(), wideHeads)).toContain(
      `${path(0, "q_proj", "B")}: shape: expected [128, 8] ([out_features, r], q_proj out_features = 128, r = 8), found [64, 8]`,
    );
  });

  it("uses per-module ranks from rank_pattern", () => {
    const cfg = config({ rank_pattern: { v_proj: 4 } });
    const specs = adapterTensorSpecs(BASE, { rankPattern: { v_proj: 4 } });
    expect(check(specs, cfg)).toEqual([]);
    expect(check(QV, cfg)).toContain(
      `${path(0, "v_proj", "A")}: shape: expected [4, 64] ([r, in_features], v_proj in_features = 64, r = 4 from rank_pattern), found [8, 64]`,
    );
  });

  it("expects tensors only for layers_to_transform", () => {
    const cfg = config({ layers_to_transform: [1] });
    expect(check(adapterTensorSpecs(BASE, { layersToTransform: [1] }), cfg)).toEqual([]);
    expect(check(QV, cfg)).toEqual([
      `${path(0, "q_proj", "A")}: unexpected tensor: expected only the layers in adapter_config layers_to_transform (1), found layer 0`,
      `${path(0, "q_proj", "B")}: unexpected tensor: expected only the layers in adapter_config layers_to_transform (1), found layer 0`,
      `${path(0, "v_proj", "A")}: unexpected tensor: expected only the layers in adapter_config layers_to_transform (1), found layer 0`,
      `${path(0, "v_proj", "B")}: unexpected tensor: expected only the layers in adapter_config layers_to_transform (1), found layer 0`,
    ]);
  });

  it("expects tensors only where a regex target_modules matches", () => {
    const cfg = config({ target_modules: String.raw`model\.layers\.1\.self_attn\.q_proj` });
    expect(check(QV, cfg)).toEqual([
      `${path(0, "q_proj", "A")}: unexpected tensor: expected only modules adapter_config targets, found q_proj in layer 0, which its target_modules/exclude_modules leave out`,
      `${path(0, "q_proj", "B")}: unexpected tensor: expected only modules adapter_config targets, found q_proj in layer 0, which its target_modules/exclude_modules leave out`,
      `${path(0, "v_proj", "A")}: unexpected tensor: expected only the modules adapter_config targets (q_proj), found v_proj`,
      `${path(0, "v_proj", "B")}: unexpected tensor: expected only the modules adapter_config targets (q_proj), found v_proj`,
      `${path(1, "v_proj", "A")}: unexpected tensor: expected only the modules adapter_config targets (q_proj), found v_proj`,
      `${path(1, "v_proj", "B")}: unexpected tensor: expected only the modules adapter_config targets (q_proj), found v_proj`,
    ]);
  });

  it("reports each missing lora_A and lora_B by the name it should have", () => {
    const specs = QV.filter((s) => !s.name.includes("layers.1.self_attn.q_proj"));
    expect(check(specs)).toEqual([
      `${path(1, "q_proj", "A")}: missing: expected this tensor (adapter_config targets q_proj in layer 1, so both lora_A and lora_B), found none`,
      `${path(1, "q_proj", "B")}: missing: expected this tensor (adapter_config targets q_proj in layer 1, so both lora_A and lora_B), found none`,
    ]);
  });

  it("reports a whole module the config targets but the file lacks, in every layer", () => {
    expect(check(QV, config({ target_modules: ["q_proj", "k_proj", "v_proj"] }))).toHaveLength(4);
  });

  it("rejects a wrong prefix as silently ignored by vLLM, without also calling the tensor missing", () => {
    const specs = QV.map((s) => ({
      ...s,
      name: s.name.replace("base_model.model.model.", "base_model.model."),
    }));
    const errors = check(specs);
    expect(errors).toHaveLength(QV.length);
    expect(errors[0]).toBe(
      `adapter_model:base_model.model.layers.0.self_attn.q_proj.lora_A.weight: name: expected ${name(0, "q_proj", "A")}, found prefix "base_model.model." instead of "base_model.model.model.": vLLM checks only the last name component, so it would load this tensor and silently ignore it`,
    );
  });

  it("rejects a module under the wrong group", () => {
    const specs = replace(QV, name(0, "v_proj", "A"), {
      name: "base_model.model.model.layers.0.mlp.v_proj.lora_A.weight",
    });
    expect(check(specs)).toEqual([
      `adapter_model:base_model.model.model.layers.0.mlp.v_proj.lora_A.weight: name: expected ${name(0, "v_proj", "A")} (v_proj lives under self_attn), found it under "mlp": vLLM would load this tensor and silently ignore it`,
    ]);
  });

  it("rejects a layer index beyond the base and a non-canonical one", () => {
    const extra: TensorSpec[] = [
      { name: name(2, "q_proj", "A"), dtype: "F16", shape: [8, 64] },
      {
        name: "base_model.model.model.layers.01.self_attn.q_proj.lora_B.weight",
        dtype: "F16",
        shape: [64, 8],
      },
    ];
    expect(check([...QV, ...extra])).toEqual([
      'adapter_model:base_model.model.model.layers.01.self_attn.q_proj.lora_B.weight: layer index: expected a plain decimal index, found "01": vLLM would not find the module and would silently ignore the tensor',
      `${path(2, "q_proj", "A")}: layer index: expected 0..1 (base llama-3.1-8b-instruct-awq has 2 layers), found 2`,
    ]);
  });

  it("rejects modules that are not LoRA targets of the base", () => {
    const fused = {
      name: "base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight",
      dtype: "F16",
      shape: [8, 64],
    };
    expect(check([...QV, fused])).toEqual([
      'adapter_model:base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight: unexpected tensor: expected a module among q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (the LoRA targets of base llama-3.1-8b-instruct-awq), found "qkv_proj"',
    ]);
  });

  it("rejects tensors of a module the config does not target", () => {
    const extra = adapterTensorSpecs(BASE, { targetModules: ["o_proj"], layersToTransform: [1] });
    expect(check([...QV, ...extra])).toEqual([
      `${path(1, "o_proj", "A")}: unexpected tensor: expected only the modules adapter_config targets (q_proj, v_proj), found o_proj`,
      `${path(1, "o_proj", "B")}: unexpected tensor: expected only the modules adapter_config targets (q_proj, v_proj), found o_proj`,
    ]);
  });

  it.each([
    [
      "base_model.model.lm_head.weight",
      "this is a full module weight (modules_to_save?), which vLLM does not load",
    ],
    [
      "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
      "this is a DoRA magnitude vector, and vLLM does not support DoRA",
    ],
    [
      "base_model.model.model.embed_tokens.lora_embedding_A",
      "this is an embedding LoRA, which vLLM does not load for this base",
    ],
    [
      "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias",
      "this is a bias, and vLLM loads no LoRA biases",
    ],
    [
      "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
      "the adapter name is still in it (PEFT's save_pretrained strips it, e.g. lora_A.default.weight → lora_A.weight)",
    ],
  ])("explains why %s does not belong", (tensorName, why) => {
    expect(check([...QV, { name: tensorName, dtype: "F16", shape: [4] }])).toEqual([
      `adapter_model:${tensorName}: unexpected tensor: expected only LoRA weights named base_model.model.model.layers.<i>.(self_attn|mlp).<module>.lora_(A|B).weight: ${why}`,
    ]);
  });

  it("rejects dtypes vLLM cannot load LoRA weights from", () => {
    const result = checkAdapterTensors(
      header(replace(QV, name(0, "q_proj", "A"), { dtype: "F64" })),
      BASE,
      config(),
    );
    expect(result.errors.map((e) => `${e.path}: ${e.message}`)).toEqual([
      `${path(0, "q_proj", "A")}: dtype: expected F16, BF16, F32, found F64`,
    ]);
  });

  it("names the tensors whose dtype differs from the majority", () => {
    const specs = replace(replace(QV, name(0, "q_proj", "A"), { dtype: "F32" }), name(1, "v_proj", "B"), {
      dtype: "BF16",
    });
    const result = checkAdapterTensors(header(specs), BASE, config());
    expect(result.dtype).toBe("F16");
    expect(result.errors.map((e) => `${e.path}: ${e.message}`)).toEqual([
      `${path(0, "q_proj", "A")}: dtype: expected F16 like the other 6 LoRA tensors (one dtype for the whole adapter), found F32`,
      `${path(1, "v_proj", "B")}: dtype: expected F16 like the other 6 LoRA tensors (one dtype for the whole adapter), found BF16`,
    ]);
  });

  it("rejects a file with no tensors once, instead of one missing error per tensor", () => {
    expect(check([])).toEqual([
      "adapter_model: expected LoRA tensors named base_model.model.model.layers.<i>.(self_attn|mlp).<module>.lora_(A|B).weight, found no tensors",
    ]);
  });

  it("does not call a tensor missing when its entry was already reported as malformed", () => {
    const { headerBytes, dataSize } = safetensorsLayout(QV);
    const json = JSON.parse(headerBytes.subarray(8).toString()) as Record<string, { dtype: string }>;
    const entry = json[name(0, "q_proj", "A")];
    if (entry !== undefined) {
      entry.dtype = "Q4_K";
    }
    const bytes = encodeHeader(json);
    const parsed = parseSafetensorsHeader(bytes, bytes.length + dataSize);
    expect(parsed.errors).toHaveLength(1);
    expect(parsed.header && checkAdapterTensors(parsed.header, BASE, config()).errors).toEqual([]);
  });

  describe("without a usable config", () => {
    it("still checks names and the dims the base fixes", () => {
      const specs = replace(QV, name(1, "v_proj", "B"), { shape: [64, 8] });
      expect(check(specs, null)).toEqual([
        `${path(1, "v_proj", "B")}: shape: expected [32, r] ([out_features, r], v_proj out_features = 32), found [64, 8]`,
      ]);
    });

    it("checks that lora_A and lora_B agree on the rank", () => {
      const specs = replace(QV, name(0, "q_proj", "B"), { shape: [64, 4] });
      expect(check(specs, null)).toEqual([
        `${path(0, "q_proj", "B")}: shape: expected rank 8 to match its lora_A, found rank 4`,
      ]);
    });

    it("accepts any rank and any module the base allows", () => {
      expect(check(adapterTensorSpecs(BASE, { rank: 32, targetModules: ["down_proj"] }), null)).toEqual([]);
    });

    it("rejects modules the base does not allow", () => {
      const attentionOnly = { ...BASE, loraTargetModules: ["q_proj", "v_proj"] };
      expect(
        check(
          adapterTensorSpecs(BASE, { targetModules: ["up_proj"], layersToTransform: [0] }),
          null,
          attentionOnly,
        ),
      ).toEqual([
        `${path(0, "up_proj", "A")}: unexpected tensor: expected a module among q_proj, v_proj (the LoRA targets of base llama-3.1-8b-instruct-awq), found up_proj`,
        `${path(0, "up_proj", "B")}: unexpected tensor: expected a module among q_proj, v_proj (the LoRA targets of base llama-3.1-8b-instruct-awq), found up_proj`,
      ]);
    });
  });
});
