import { describe, expect, it } from "vitest";
import { familyMismatch, identifyModel } from "./model-family.ts";

describe("identifyModel", () => {
  it.each([
    ["Qwen/Qwen2.5-7B-Instruct-AWQ", { family: "qwen", version: "2.5", size: "7b" }],
    ["Qwen/Qwen2-7B", { family: "qwen", version: "2", size: "7b" }],
    ["hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", { family: "llama", version: "3.1", size: "8b" }],
    ["meta-llama/Llama-3.1-8B-Instruct", { family: "llama", version: "3.1", size: "8b" }],
    ["meta-llama/Meta-Llama-3-8B-Instruct", { family: "llama", version: "3", size: "8b" }],
    ["unsloth/llama3-8b-bnb-4bit", { family: "llama", version: "3", size: "8b" }],
    ["solidrust/Mistral-7B-Instruct-v0.3-AWQ", { family: "mistral", version: "0.3", size: "7b" }],
    ["mistralai/Mixtral-8x7B-Instruct-v0.1", { family: "mixtral", version: "0.1", size: "8x7b" }],
    ["deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", { family: "deepseek", version: null, size: "7b" }],
    ["google/gemma-2-9b-it", { family: "gemma", version: "2", size: "9b" }],
    ["microsoft/Phi-3.5-mini-instruct", { family: "phi", version: "3.5", size: null }],
    ["cognitivecomputations/dolphin-2.9-llama3-8b", { family: "llama", version: "3", size: "8b" }],
    [
      "/root/.cache/huggingface/hub/models--Qwen--Qwen2.5-7B-Instruct/snapshots/0a1b2c",
      { family: "qwen", version: "2.5", size: "7b" },
    ],
  ])("reads %s", (name, identity) => {
    expect(identifyModel(name)).toEqual(identity);
  });

  it.each(["", "my-finetune", "/data/checkpoints/run-17", "gpt-foo"])("knows nothing about %j", (name) => {
    expect(identifyModel(name)).toBeNull();
  });
});

describe("familyMismatch", () => {
  const qwen = "Qwen/Qwen2.5-7B-Instruct-AWQ";
  const llama = "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4";
  const mistral = "solidrust/Mistral-7B-Instruct-v0.3-AWQ";

  it.each([
    ["Qwen/Qwen2.5-7B-Instruct", qwen],
    ["Qwen/Qwen2.5-7B", qwen],
    ["unsloth/qwen2.5-7b-instruct-bnb-4bit", qwen],
    ["meta-llama/Llama-3.1-8B-Instruct", llama],
    ["meta-llama/Meta-Llama-3.1-8B-Instruct", llama],
    ["unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit", llama],
    ["mistralai/Mistral-7B-Instruct-v0.3", mistral],
    ["mistralai/Mistral-7B-v0.3", mistral],
    ["my-private-model", qwen],
    ["/home/me/out/checkpoint-500", llama],
  ])("lets an adapter for %s serve on %s", (adapterBase, base) => {
    expect(familyMismatch(adapterBase, base)).toBeNull();
  });

  it.each([
    ["meta-llama/Llama-3.1-8B-Instruct", qwen, "(llama 3.1 8b)"],
    ["Qwen/Qwen2.5-7B-Instruct", llama, "(qwen 2.5 7b)"],
    ["Qwen/Qwen2-7B-Instruct", qwen, "(qwen 2 7b)"],
    ["Qwen/Qwen2.5-14B-Instruct", qwen, "(qwen 2.5 14b)"],
    ["meta-llama/Llama-2-7b-hf", llama, "(llama 2 7b)"],
    ["mistralai/Mistral-7B-Instruct-v0.2", mistral, "(mistral 0.2 7b)"],
    ["deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", qwen, "(deepseek 7b)"],
  ])("refuses an adapter for %s on %s", (adapterBase, base, described) => {
    expect(familyMismatch(adapterBase, base)).toBe(
      `expected the base model ${JSON.stringify(base)} (${describeBase(base)}) or its full-precision repo, found ${JSON.stringify(adapterBase)} ${described}: the adapter was trained for a different model`,
    );
  });
});

function describeBase(name: string): string {
  return (
    {
      "Qwen/Qwen2.5-7B-Instruct-AWQ": "qwen 2.5 7b",
      "solidrust/Mistral-7B-Instruct-v0.3-AWQ": "mistral 0.3 7b",
    }[name] ?? "llama 3.1 8b"
  );
}
