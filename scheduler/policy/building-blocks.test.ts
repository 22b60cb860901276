import { describe, expect, it } from "vitest";
import { HalfLifeTuner } from "./half-life-tuner.ts";
import { createPrng } from "./index.ts";
import { KeyedHeap } from "./keyed-heap.ts";
import { LruSet } from "./lru-set.ts";

describe("KeyedHeap", () => {
  it("agrees with a sorted list under random inserts, key changes and deletes", () => {
    const prng = createPrng(7);
    const heap = new KeyedHeap();
    const reference = new Map<number, number>();
    for (let step = 0; step < 5000; step++) {
      const item = prng.int(64);
      if (prng.next() < 0.3) {
        expect(heap.delete(item)).toBe(reference.delete(item));
      } else {
        const key = prng.int(20);
        heap.set(item, key);
        reference.set(item, key);
      }
      const sorted = [...reference].sort((a, b) => a[1] - b[1] || a[0] - b[0]);
      expect(heap.size).toBe(reference.size);
      expect(heap.peek()).toBe(sorted[0]?.[0] ?? -1);
      if (step % 100 === 0) {
        expect(heap.lowest(5)).toEqual(sorted.slice(0, 5).map(([i]) => i));
      }
    }
  });
});

describe("LruSet", () => {
  it("pushes out the least recent item, skipping busy ones when asked", () => {
    const set = new LruSet(3);
    for (const item of [1, 2, 3]) {
      set.touch(item);
    }
    set.touch(1);
    expect(set.touch(4)).toBe(2);
    expect(set.list()).toEqual([3, 1, 4]);
    expect(set.touchAvoiding(5, new Map([[3, 1]]))).toBe(1);
    expect(set.list()).toEqual([3, 4, 5]);
    set.resize(1);
    expect(set.list()).toEqual([5]);
  });
});

describe("HalfLifeTuner", () => {
  const tune = (next: (i: number) => number) => {
    const tuner = new HalfLifeTuner([4, 16, 64, 256]);
    tuner.resize(32);
    for (let i = 1; i <= 60_000; i++) {
      tuner.record(next(i), i, 0);
      if (i % 1000 === 0) {
        tuner.best(64, 8);
      }
    }
    return tuner.best(64, 8);
  };

  it("picks a long half-life when popularity is steady", () => {
    const prng = createPrng(3);
    // Zipf-like over 2000 adapters: steady popularity rewards long memory.
    expect(tune(() => Math.floor(2000 * prng.next() ** 3))).toBeGreaterThanOrEqual(64);
  });

  it("picks a short half-life when the working set keeps moving", () => {
    const prng = createPrng(4);
    // 24 adapters in use at a time, the whole set replaced every 3000 requests.
    expect(tune((i) => Math.floor(i / 3000) * 24 + prng.int(24))).toBeLessThanOrEqual(16);
  });
});
