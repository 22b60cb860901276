/** A bounded set in recency order (a Map keeps insertion order), mirroring one of the engine's LRUs. */
export class LruSet {
  private readonly entries = new Map<number, true>();
  private capacityValue: number;

  constructor(capacity: number) {
    this.capacityValue = Math.max(0, capacity);
  }

  get size(): number {
    return this.entries.size;
  }

  get capacity(): number {
    return this.capacityValue;
  }

  has(item: number): boolean {
    return this.entries.has(item);
  }

  /** Make `item` the most recent; returns the item it pushed out, or -1. */
  touch(item: number): number {
    if (this.capacityValue === 0) {
      return -1;
    }
    if (this.entries.delete(item)) {
      this.entries.set(item, true);
      return -1;
    }
    this.entries.set(item, true);
    return this.entries.size > this.capacityValue ? this.evictOldest() : -1;
  }

  /** Make `item` the most recent, pushing out the least recent item that is not busy; returns it, or -1. */
  touchAvoiding(item: number, busy: ReadonlyMap<number, number>): number {
    if (this.capacityValue === 0) {
      return -1;
    }
    if (this.entries.delete(item) || this.entries.size < this.capacityValue) {
      this.entries.set(item, true);
      return -1;
    }
    let victim = -1;
    for (const candidate of this.entries.keys()) {
      if (!busy.has(candidate)) {
        victim = candidate;
        break;
      }
    }
    if (victim === -1) {
      for (const candidate of this.entries.keys()) {
        victim = candidate;
        break;
      }
    }
    this.entries.delete(victim);
    this.entries.set(item, true);
    return victim;
  }

  delete(item: number): void {
    this.entries.delete(item);
  }

  resize(capacity: number): void {
    this.capacityValue = Math.max(0, capacity);
    while (this.entries.size > this.capacityValue) {
      this.evictOldest();
    }
  }

  /** Least recent first. */
  list(): number[] {
    return [...this.entries.keys()];
  }

  private evictOldest(): number {
    for (const item of this.entries.keys()) {
      this.entries.delete(item);
      return item;
    }
    return -1;
  }
}
