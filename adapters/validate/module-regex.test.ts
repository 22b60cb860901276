import { describe, expect, it } from "vitest";
import { compileModuleRegex } from "./module-regex.ts";

function fullmatch(pattern: string): RegExp {
  const compiled = compileModuleRegex(pattern, "fullmatch");
  if (compiled.regex === undefined) {
    throw new Error(compiled.error);
  }
  return compiled.regex;
}

describe("compileModuleRegex", () => {
  it("full-matches like re.fullmatch: the whole module path, not a substring", () => {
    const regex = fullmatch(String.raw`.*\.(q_proj|v_proj)`);
    expect(regex.test("model.layers.0.self_attn.q_proj")).toBe(true);
    expect(regex.test("model.layers.0.self_attn.k_proj")).toBe(false);
    expect(fullmatch("q_proj").test("model.layers.0.self_attn.q_proj")).toBe(false);
  });

  it("matches a pattern key as a dotted suffix, like PEFT's rank_pattern lookup", () => {
    const compiled = compileModuleRegex("self_attn.q_proj", "suffix");
    expect(compiled.regex?.test("model.layers.3.self_attn.q_proj")).toBe(true);
    expect(compiled.regex?.test("model.layers.3.self_attn.xq_proj")).toBe(false);
    expect(
      compileModuleRegex(String.raw`layers\.1\..*`, "suffix").regex?.test("model.layers.1.mlp.up_proj"),
    ).toBe(true);
  });

  it("accepts the patterns people write: lookaheads, \\d+, alternations", () => {
    for (const pattern of [
      String.raw`^(?!.*vision).*\.(q|k|v|o)_proj$`,
      String.raw`model\.layers\.\d+\.self_attn\.(q|v)_proj`,
      String.raw`.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)`,
      String.raw`.*layers\.\d+\..*\.(q|v)_proj`,
    ]) {
      expect(compileModuleRegex(pattern, "fullmatch").error).toBeUndefined();
    }
  });

  it("translates Python named groups", () => {
    expect(fullmatch(String.raw`.*\.(?P<m>q_proj)`).test("model.layers.0.self_attn.q_proj")).toBe(true);
  });

  it("refuses quantified groups, the classic catastrophic-backtracking shape", () => {
    expect(compileModuleRegex("(a+)+$", "fullmatch").error).toBe(
      'regex "(a+)+$" is not accepted: quantified groups such as (...)* or (...)+ are not supported',
    );
    expect(compileModuleRegex("(?:x|y){2,}", "fullmatch").error).toMatch(/quantified groups/);
  });

  it("refuses back-references", () => {
    expect(compileModuleRegex(String.raw`(a)\1`, "fullmatch").error).toMatch(/back-references/);
    expect(compileModuleRegex("(?P<x>a)(?P=x)", "fullmatch").error).toMatch(/back-references/);
  });

  it("refuses too many stacked wildcards", () => {
    expect(compileModuleRegex(".*a.*b.*c.*d", "fullmatch").error).toMatch(/too many nested wildcards/);
  });

  it("refuses patterns over 256 characters", () => {
    expect(compileModuleRegex("a".repeat(257), "fullmatch").error).toBe(
      "expected a regex of at most 256 characters, found 257",
    );
  });

  it("reports Python-only syntax that JavaScript cannot compile instead of silently matching differently", () => {
    expect(compileModuleRegex("(?i)Q_PROJ", "fullmatch").error).toMatch(
      /^regex "\(\?i\)Q_PROJ" does not compile/,
    );
    expect(compileModuleRegex(String.raw`q_proj\Z`, "fullmatch").error).toMatch(/does not compile/);
  });

  it("reports unbalanced parentheses", () => {
    expect(compileModuleRegex("(q_proj", "fullmatch").error).toMatch(/unbalanced parentheses/);
    expect(compileModuleRegex("q_proj)", "fullmatch").error).toMatch(/unbalanced parentheses/);
  });

  it("treats brackets and escapes as single atoms", () => {
    const regex = fullmatch(String.raw`[qkv]_proj|\)[)(]+`);
    expect(regex.test("k_proj")).toBe(true);
    expect(regex.test(")((")).toBe(true);
  });
});
