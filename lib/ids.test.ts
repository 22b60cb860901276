import { afterEach, describe, expect, it, vi } from "vitest";
import { isId, newId } from "./ids.ts";

describe("newId", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("gives distinct well-formed ids across many refills of its random pool", () => {
    const ids = Array.from({ length: 5_000 }, () => newId("req"));
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) {
      expect(isId(id, "req")).toBe(true);
    }
  });

  it("orders ids made in later milliseconds after earlier ones", () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    // The second carries into the next base-32 digit (…031 ends in 31): the order must hold across it.
    const ids = [1_700_000_000_031, 1_700_000_000_032, 1_700_000_000_033].map((ms) => {
      vi.setSystemTime(ms);
      return newId("adp");
    });
    const times = ids.map((id) => id.slice(4, 14));
    expect(new Set(times).size).toBe(3);
    expect([...times].sort()).toEqual(times);
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
