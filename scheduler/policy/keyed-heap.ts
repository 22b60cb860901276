/**
 * A min-heap of small non-negative integer items (dense indices), each with a key that can change in
 * place. Ties break on the item. Positions live in a typed array indexed by item: no per-operation
 * allocation, at 4 bytes per possible item.
 */
export class KeyedHeap {
  private readonly items: number[] = [];
  private readonly keys: number[] = [];
  private positions = new Int32Array(16).fill(-1);

  get size(): number {
    return this.items.length;
  }

  has(item: number): boolean {
    return this.position(item) >= 0;
  }

  keyOf(item: number): number | undefined {
    const at = this.position(item);
    return at < 0 ? undefined : this.keys[at];
  }

  /** The item with the lowest key, or -1 when empty. */
  peek(): number {
    return this.items.length === 0 ? -1 : (this.items[0] as number);
  }

  peekKey(): number {
    return this.items.length === 0 ? Number.POSITIVE_INFINITY : (this.keys[0] as number);
  }

  /** Items in heap order (not sorted). */
  list(): readonly number[] {
    return this.items;
  }

  set(item: number, key: number): void {
    const at = this.position(item);
    if (at < 0) {
      if (item >= this.positions.length) {
        const grown = new Int32Array(Math.max(item + 1, this.positions.length * 2)).fill(-1);
        grown.set(this.positions);
        this.positions = grown;
      }
      this.items.push(item);
      this.keys.push(key);
      this.positions[item] = this.items.length - 1;
      this.up(this.items.length - 1);
      return;
    }
    const old = this.keys[at] as number;
    if (old === key) {
      return;
    }
    this.keys[at] = key;
    if (key < old) {
      this.up(at);
    } else {
      this.down(at);
    }
  }

  delete(item: number): boolean {
    const at = this.position(item);
    if (at < 0) {
      return false;
    }
    this.positions[item] = -1;
    const lastItem = this.items.pop() as number;
    const lastKey = this.keys.pop() as number;
    if (at < this.items.length) {
      this.items[at] = lastItem;
      this.keys[at] = lastKey;
      this.positions[lastItem] = at;
      this.up(at);
      this.down(this.positions[lastItem] as number);
    }
    return true;
  }

  /** The k lowest items in (key, item) order, without changing the heap. O(n log n): for rare paths. */
  lowest(k: number): number[] {
    const order = this.items.map((_, at) => at);
    order.sort((a, b) => (this.less(a, b) ? -1 : 1));
    return order.slice(0, Math.max(0, k)).map((at) => this.items[at] as number);
  }

  private position(item: number): number {
    return item >= 0 && item < this.positions.length ? (this.positions[item] as number) : -1;
  }

  private less(a: number, b: number): boolean {
    const ka = this.keys[a] as number;
    const kb = this.keys[b] as number;
    return ka < kb || (ka === kb && (this.items[a] as number) < (this.items[b] as number));
  }

  private swap(a: number, b: number): void {
    const ia = this.items[a] as number;
    const ib = this.items[b] as number;
    const ka = this.keys[a] as number;
    this.items[a] = ib;
    this.items[b] = ia;
    this.keys[a] = this.keys[b] as number;
    this.keys[b] = ka;
    this.positions[ib] = a;
    this.positions[ia] = b;
  }

  private up(at: number): void {
    let i = at;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(i, parent)) {
        return;
      }
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(at: number): void {
    let i = at;
    const n = this.items.length;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < n && this.less(left, smallest)) {
        smallest = left;
      }
      if (right < n && this.less(right, smallest)) {
        smallest = right;
      }
      if (smallest === i) {
        return;
      }
      this.swap(i, smallest);
      i = smallest;
    }
  }
}
