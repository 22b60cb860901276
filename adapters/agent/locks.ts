export type Release = () => void;

/** One holder per key at a time; waiters queue in arrival order. */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  /** True while someone holds or waits for `key`. */
  isBusy(key: string): boolean {
    return this.tails.has(key);
  }

  async acquire(key: string): Promise<Release> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const release = this.enqueue(key, previous);
    await previous;
    return release;
  }

  /** Takes the lock only if nobody holds or waits for it; never waits. */
  tryAcquire(key: string): Release | null {
    return this.tails.has(key) ? null : this.enqueue(key, Promise.resolve());
  }

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire(key);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  private enqueue(key: string, previous: Promise<void>): Release {
    let open: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      open = resolve;
    });
    const tail = previous.then(() => held);
    this.tails.set(key, tail);
    let released = false;
    return () => {
      if (released) {
        return;
      }
      released = true;
      open();
      if (this.tails.get(key) === tail) {
        this.tails.delete(key);
      }
    };
  }
}
