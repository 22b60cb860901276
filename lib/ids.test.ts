import { describe, expect, it } from "vitest";
import { isId, newId } from "./ids.ts";

describe("newId", () => {
  it("gives distinct well-formed ids across many refills of its random pool", () => {
    const ids = Array.from({ length: 5_000 }, () => newId("req"));
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) {
      expect(isId(id, "req")).toBe(true);
    }
  });

  it("orders ids made in later milliseconds after earlier ones", async () => {
    const first = newId("adp");
    await new Promise((r) => setTimeout(r, 5));
    const second = newId("adp");
    expect(second.slice(4, 14) > first.slice(4, 14)).toBe(true);
  });

  it("spreads the random part over the whole alphabet", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 500; i++) {
      for (const ch of newId("ten").slice(14)) {
        seen.add(ch);
      }
    }
    expect(seen.size).toBe(32);
  });
});
