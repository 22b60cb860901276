import { KeyedHeap } from "./keyed-heap.ts";

/** Sampled miniature caches hold about this many adapters, whatever the fleet's size. */
const MINI_CAPACITY = 64;
/** Hit counters halve every this many sampled requests: the window the choice is judged on. */
const HIT_HALF_LIFE = 20_000;
/** Samples waiting for the next `plan`; beyond this, samples are dropped until it runs. */
const BACKLOG = 16_384;

interface Rung {
  perSlot: number;
  perRequest: number;
  counts: Map<number, number>;
  cache: KeyedHeap;
  deadlines: KeyedHeap;
  hits: number;
}

/**
 * Picks the demand half-life online. Every candidate half-life drives a miniature copy of the
 * cost-aware cache over a hash-sampled subset of adapters, scaled down to ~64 slots (miniature
 * simulation, Waldspurger et al., ATC '17); the half-life whose copy hits most lately wins. Long
 * half-lives win on steady popularity, short ones when sessions and bursts come and go. A request
 * only queues its sample; `plan` replays the queue, so the request path stays O(1) here.
 */
export class HalfLifeTuner {
  private readonly rungs: Rung[];
  private modulus = 1;
  private miniCapacity = 0;
  private slots = 0;
  private readonly hitDecay = 2 ** (-1 / HIT_HALF_LIFE);
  private readonly queuedAdapters = new Int32Array(BACKLOG);
  private readonly queuedClocks = new Float64Array(BACKLOG);
  private readonly queuedWeights = new Float64Array(BACKLOG);
  private queued = 0;

  constructor(perSlotCandidates: readonly number[]) {
    this.rungs = perSlotCandidates.map((perSlot) => ({
      perSlot,
      perRequest: 0,
      counts: new Map(),
      cache: new KeyedHeap(),
      deadlines: new KeyedHeap(),
      hits: 0,
    }));
  }

  /** Size the miniatures for `slots` registration slots; a new size starts them afresh. */
  resize(slots: number): void {
    if (slots === this.slots) {
      return;
    }
    this.slots = slots;
    this.modulus = Math.max(1, Math.floor(slots / MINI_CAPACITY));
    this.miniCapacity = Math.max(1, Math.round(slots / this.modulus));
    this.queued = 0;
    for (const rung of this.rungs) {
      rung.perRequest = Math.LN2 / (rung.perSlot * Math.max(1, slots));
      rung.counts.clear();
      rung.cache = new KeyedHeap();
      rung.deadlines = new KeyedHeap();
      rung.hits = 0;
    }
  }

  /** One request of the base, at its clock; `weight` is ln(cost × priority) as the real ranker uses it. */
  record(adapter: number, clock: number, weight: number): void {
    if (this.modulus > 1 && (Math.imul(adapter + 1, 0x9e3779b1) >>> 0) % this.modulus !== 0) {
      return;
    }
    if (this.queued < BACKLOG) {
      this.queuedAdapters[this.queued] = adapter;
      this.queuedClocks[this.queued] = clock;
      this.queuedWeights[this.queued] = weight;
      this.queued++;
    }
  }

  /**
   * Replays the queued samples through every miniature; `silence` as the real ranker uses it. Then
   * the half-life per slot whose miniature hits most: `current` unless another is strictly better.
   */
  best(current: number, silence: number): number {
    for (let i = 0; i < this.queued; i++) {
      this.replay(
        this.queuedAdapters[i] as number,
        this.queuedClocks[i] as number,
        this.queuedWeights[i] as number,
        silence,
      );
    }
    this.queued = 0;
    let best = current;
    let bestHits = this.rungs.find((rung) => rung.perSlot === current)?.hits ?? Number.NEGATIVE_INFINITY;
    for (const rung of this.rungs) {
      if (rung.hits > bestHits) {
        best = rung.perSlot;
        bestHits = rung.hits;
      }
    }
    return best;
  }

  private replay(adapter: number, clock: number, weight: number, silence: number): void {
    for (const rung of this.rungs) {
      const stamp = clock * rung.perRequest;
      const old = rung.counts.get(adapter);
      const count =
        old === undefined ? stamp : Math.max(old, stamp) + Math.log1p(Math.exp(-Math.abs(old - stamp)));
      rung.counts.set(adapter, count);
      rung.hits *= this.hitDecay;
      if (rung.cache.has(adapter)) {
        rung.hits += 1;
      } else if (rung.cache.size >= this.miniCapacity) {
        const victim = rung.deadlines.peekKey() < clock ? rung.deadlines.peek() : rung.cache.peek();
        rung.cache.delete(victim);
        rung.deadlines.delete(victim);
      }
      rung.cache.set(adapter, count + weight);
      const rate = Math.exp(count - stamp) * rung.perRequest;
      rung.deadlines.set(adapter, clock + silence / rate);
    }
  }
}
