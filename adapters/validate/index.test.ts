import { describe, expect, it } from "vitest";
import {
  ALL_LINEAR_MODULES,
  BROKEN_FIXTURES,
  buildAdapter,
  buildAdapterHeader,
  QV_MODULES,
  tinyBase,
} from "../../test/fixtures/generate.ts";
import {
  type BaseModelSpec,
  checkAdapterConfig,
  SafetensorsHeaderReader,
  SEEDED_BASE_MODELS,
  type ValidateAdapterResult,
  validateAdapter,
} from "./index.ts";

const [QWEN, LLAMA, MISTRAL] = SEEDED_BASE_MODELS as [BaseModelSpec, BaseModelSpec, BaseModelSpec];

function validate(files: { config: Buffer; model: Buffer }, base: BaseModelSpec, maxErrors?: number) {
  return validateAdapter(
    { configText: files.config.toString("utf8"), header: files.model, totalSize: files.model.length, base },
    maxErrors === undefined ? {} : { maxErrors },
  );
}

function errorLines(result: ValidateAdapterResult): string[] {
  return result.ok ? [] : result.errors.map((e) => `${e.path}: ${e.message}`);
}

describe("validateAdapter on valid adapters", () => {
  describe.each([QWEN, LLAMA, MISTRAL])("$id", (real) => {
    it.each([
      ["tiny", "q_proj + v_proj", QV_MODULES],
      ["tiny", "all linear", ALL_LINEAR_MODULES],
      ["real", "q_proj + v_proj", QV_MODULES],
    ] as const)("accepts a %s-shape rank-8 %s adapter", (scale, _label, modules) => {
      const base = scale === "tiny" ? tinyBase(real) : real;
      const result = validate(buildAdapter(base, { targetModules: modules }), base);
      expect(result).toEqual({
        ok: true,
        summary: {
          rank: 8,
          alpha: 16,
          targetModules: [...modules],
          dtype: "F16",
          useRslora: false,
          tensorCount: 2 * modules.length * base.architecture.num_hidden_layers,
        },
      });
    });

    it("accepts a real-shape rank-8 all-linear header given the file's size", () => {
      const { config, header, totalSize } = buildAdapterHeader(real, { targetModules: ALL_LINEAR_MODULES });
      const result = validateAdapter({ configText: config.toString(), header, totalSize, base: real });
      expect(result.ok).toBe(true);
    });
  });

  it("accepts a real-shape all-linear rank-16 Llama adapter from its header alone", () => {
    const { config, header, totalSize } = buildAdapterHeader(LLAMA, {
      rank: 16,
      targetModules: ALL_LINEAR_MODULES,
      dtype: "BF16",
    });
    // Per layer: 16 × (4096+4096 + 4096+1024 + 4096+1024 + 4096+4096 + 3 × (4096+14336)) elements, 2 bytes each.
    expect(totalSize - header.length).toBe(32 * 16 * (8192 + 5120 + 5120 + 8192 + 3 * 18432) * 2);
    expect(validateAdapter({ configText: config.toString(), header, totalSize, base: LLAMA })).toEqual({
      ok: true,
      summary: {
        rank: 16,
        alpha: 32,
        targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        dtype: "BF16",
        useRslora: false,
        tensorCount: 448,
      },
    });
  });

  it("rejects that real-shape Llama header when it is checked against the Qwen base", () => {
    const { config, header, totalSize } = buildAdapterHeader(LLAMA, {
      rank: 16,
      targetModules: ALL_LINEAR_MODULES,
      baseModelNameOrPath: "Qwen/Qwen2.5-7B-Instruct",
    });
    const result = validateAdapter(
      { configText: config.toString(), header, totalSize, base: QWEN },
      { maxErrors: 10_000 },
    );
    expect(errorLines(result)).toContain(
      "adapter_model:base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight: shape: expected [16, 3584] ([r, in_features], q_proj in_features = 3584, r = 16), found [16, 4096]",
    );
    expect(errorLines(result)).toContain(
      "adapter_model:base_model.model.model.layers.31.mlp.down_proj.lora_B.weight: layer index: expected 0..27 (base qwen2.5-7b-instruct-awq has 28 layers), found 31",
    );
  });

  it("rejects a real-shape header whose file is shorter than the header says", () => {
    const { config, header, totalSize } = buildAdapterHeader(LLAMA, {
      rank: 16,
      targetModules: ALL_LINEAR_MODULES,
    });
    const result = validateAdapter({
      configText: config.toString(),
      header,
      totalSize: totalSize - 2,
      base: LLAMA,
    });
    expect(errorLines(result)).toEqual([
      `adapter_model: truncated: expected ${totalSize} bytes (8 + ${header.length - 8} header + ${totalSize - header.length} tensor data), found ${totalSize - 2}`,
    ]);
  });

  it("summarises rsLoRA, alpha and the largest per-module rank", () => {
    const base = tinyBase(QWEN);
    const options = { rank: 8, alpha: 12, useRslora: true, rankPattern: { "layers.1.self_attn.v_proj": 32 } };
    const result = validate(buildAdapter(base, options), base);
    expect(result.ok && result.summary).toEqual({
      rank: 32,
      alpha: 12,
      targetModules: ["q_proj", "v_proj"],
      dtype: "F16",
      useRslora: true,
      tensorCount: 8,
    });
  });

  it("accepts F32 and BF16 weights", () => {
    const base = tinyBase(MISTRAL);
    for (const dtype of ["F32", "BF16"] as const) {
      const result = validate(buildAdapter(base, { dtype }), base);
      expect(result.ok && result.summary.dtype).toBe(dtype);
    }
  });
});

describe("validateAdapter on broken adapters", () => {
  const cases = SEEDED_BASE_MODELS.flatMap((real) =>
    BROKEN_FIXTURES.map((fixture) => ({
      base: tinyBase(real),
      fixture,
      label: `${real.id}: ${fixture.name}`,
    })),
  );

  it.each(cases)("rejects $label", ({ base, fixture }) => {
    const result = validate(fixture.build(base), base);
    expect(result.ok).toBe(false);
    const lines = errorLines(result);
    expect(
      lines.some((line) => fixture.expect.test(line)),
      lines.join("\n"),
    ).toBe(true);
  });

  it("rejects each broken real-shape Llama adapter too", () => {
    for (const fixture of BROKEN_FIXTURES) {
      const lines = errorLines(validate(fixture.build(LLAMA), LLAMA));
      expect(
        lines.some((line) => fixture.expect.test(line)),
        `${fixture.name}:\n${lines.join("\n")}`,
      ).toBe(true);
    }
  });

  it("collects the problems of both files in one answer", () => {
    const base = tinyBase(LLAMA);
    const files = BROKEN_FIXTURES.find((f) => f.name === "missing lora_B for a layer")?.build(base);
    if (files === undefined) {
      throw new Error("fixture renamed");
    }
    const config = Buffer.from(
      JSON.stringify({ ...JSON.parse(files.config.toString()), use_dora: true, r: 128 }),
    );
    const result = validate({ config, model: files.model }, base);
    expect(result.ok ? [] : result.errors.map((e) => e.path)).toEqual([
      "adapter_config:use_dora",
      "adapter_config:r",
      ...[0, 1].flatMap((layer) =>
        ["q_proj", "v_proj"].flatMap((m) =>
          (layer === 1 && m === "v_proj" ? ["A"] : ["A", "B"]).map(
            (ab) => `adapter_model:base_model.model.model.layers.${layer}.self_attn.${m}.lora_${ab}.weight`,
          ),
        ),
      ),
      "adapter_model:base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight",
    ]);
  });

  it("checks the tensors' names and dims even when the config is unusable", () => {
    const base = tinyBase(LLAMA);
    const { model } = buildAdapter(base, {
      tensors: (specs) => specs.map((s) => ({ ...s, name: s.name.replace("model.model.", "model.") })),
    });
    const result = validate({ config: Buffer.from("not json"), model }, base);
    expect(errorLines(result)[0]).toMatch(/^adapter_config: expected a JSON object/);
    expect(errorLines(result).filter((l) => l.includes("silently ignore"))).toHaveLength(8);
  });

  it("caps the error list and says how many were left out", () => {
    const files = buildAdapter(LLAMA, {
      targetModules: ALL_LINEAR_MODULES,
      fill: "zeros",
      tensors: (specs) =>
        specs.map((s) => ({ ...s, name: s.name.replace("base_model.model.model.", "model.") })),
    });
    const capped = validate(files, LLAMA);
    expect(capped.ok ? 0 : capped.errors.length).toBe(200);
    expect(capped.ok ? null : capped.errors[199]).toEqual({
      path: "adapter_model",
      message: "and 249 more errors",
    });
    const all = validate(files, LLAMA, 1000);
    expect(all.ok ? 0 : all.errors.length).toBe(448);
  });
});

describe("streaming", () => {
  it("validates what SafetensorsHeaderReader kept from a stream of small chunks", () => {
    const base = tinyBase(QWEN);
    const { config, model } = buildAdapter(base, { targetModules: ALL_LINEAR_MODULES });
    const reader = new SafetensorsHeaderReader();
    for (let i = 0; i < model.length; i += 7) {
      expect(reader.push(model.subarray(i, i + 7)).state).not.toBe("rejected");
    }
    const state = reader.end();
    expect(state.state).toBe("complete");
    if (state.state !== "complete") {
      return;
    }
    expect(state.headerBytes.length).toBeLessThan(model.length);
    const result = validateAdapter({
      configText: config.toString(),
      header: state.headerBytes,
      totalSize: reader.bytesSeen,
      base,
    });
    expect(result.ok).toBe(true);
  });

  it("offers the config check alone, for answering before the weights have arrived", () => {
    const base = tinyBase(QWEN);
    const { config } = buildAdapter(base, { config: { bias: "all" } });
    expect(checkAdapterConfig(config.toString(), base).errors.map((e) => e.path)).toEqual([
      "adapter_config:bias",
    ]);
    expect(checkAdapterConfig("[]", base)).toEqual({
      config: null,
      errors: [{ path: "adapter_config", message: "expected a JSON object, found an array" }],
    });
  });
});
