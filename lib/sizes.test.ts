import { describe, expect, it } from "vitest";
import { approximateBytes } from "./sizes.ts";

describe("approximateBytes", () => {
  it("grows with the strings a value holds, nested in objects and arrays", () => {
    const small = approximateBytes({ name: "a", tags: ["x"] });
    const large = approximateBytes({ name: "a".repeat(10_000), tags: ["x".repeat(5_000)] });
    expect(large - small).toBe(2 * (9_999 + 4_999));
    expect(approximateBytes("abc")).toBe(6);
    expect(approximateBytes(42n)).toBe(16);
    expect(approximateBytes(null)).toBe(16);
  });

  it("stops at a depth, so a deep or cyclic value costs a bounded walk", () => {
    const cyclic: Record<string, unknown> = { label: "loop" };
    cyclic.self = cyclic;
    expect(approximateBytes(cyclic)).toBeLessThan(1_000);
  });
});
