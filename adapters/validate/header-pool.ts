import { Worker } from "node:worker_threads";
import { AppError } from "../../lib/index.ts";
import type { BaseModelSpec } from "./base-spec.ts";
import type { ValidationError } from "./errors.ts";
import type { HeaderWorkerReply, HeaderWorkerRequest } from "./header-worker.ts";
import type { ValidateAdapterResult } from "./index.ts";

/** What the most hostile header the upload cap lets through takes to check (~1 s), with room. */
const REQUEST_TIMEOUT_MS = 20_000;
const MAX_ERRORS = 200;

interface Pending {
  resolve: (reply: HeaderWorkerReply) => void;
  reject: (error: unknown) => void;
  timer: NodeJS.Timeout;
}

interface Slot {
  worker: Worker;
  pending: Map<string, Pending>;
  jobs: number;
  /** Its worker died or was stopped: the headers it held are gone. */
  dead: boolean;
}

const unavailable = (cause: unknown) =>
  new AppError("UNAVAILABLE", "the adapter could not be checked right now; retry shortly", {
    retryAfterSeconds: 5,
    cause,
  });

/** One upload's header, parsed once in a worker thread: early problems, then the verdict. */
export interface HeaderJob {
  /** The problems the header shows alone (an unreadable header, malformed entries); [] if none. */
  readonly early: Promise<ValidationError[]>;
  /** Checks config and header together, once the file's size is known; ends the job. */
  finish(input: {
    configText: string;
    totalSize: number;
    base: BaseModelSpec;
  }): Promise<ValidateAdapterResult>;
  /** Gives the job up (the upload failed): the worker forgets the header. */
  drop(): void;
}

/**
 * Safetensors headers are tenant input: parsing one and checking its entries against the base takes
 * up to a second for the largest header the upload accepts. That work runs in worker threads, so the
 * API's event loop (everyone's completions) never waits for it. A worker that hangs or dies is
 * replaced; its uploads fail with a 503.
 */
export class HeaderValidationPool {
  private readonly slots: (Slot | null)[];
  private nextId = 1;
  private closed = false;

  constructor(size = 2) {
    this.slots = Array.from({ length: size }, () => null);
  }

  begin(bytes: Uint8Array, maxHeaderBytes: number): HeaderJob {
    const slot = this.slot(this.leastBusy());
    slot.jobs++;
    const id = this.nextId++;
    let ended = false;
    const end = () => {
      if (!ended) {
        ended = true;
        slot.jobs--;
      }
    };
    const early = this.call(slot, { type: "header", id, bytes, maxHeaderBytes, maxErrors: MAX_ERRORS }).then(
      (reply) => (reply.type === "header" ? reply.errors : []),
    );
    return {
      early,
      finish: async ({ configText, totalSize, base }) => {
        try {
          const reply = await this.call(slot, {
            type: "finish",
            id,
            configText,
            totalSize,
            base,
            maxErrors: MAX_ERRORS,
          });
          if (reply.type !== "finish") {
            throw new Error("the header worker answered out of turn");
          }
          return reply.result;
        } finally {
          end();
        }
      },
      drop: () => {
        if (!ended) {
          end();
          if (!slot.dead) {
            slot.worker.postMessage({ type: "drop", id } satisfies HeaderWorkerRequest);
          }
        }
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((slot) => slot?.worker.terminate()));
  }

  private leastBusy(): number {
    let best = 0;
    for (let i = 1; i < this.slots.length; i++) {
      if ((this.slots[i]?.jobs ?? 0) < (this.slots[best]?.jobs ?? 0)) {
        best = i;
      }
    }
    return best;
  }

  private slot(index: number): Slot {
    const existing = this.slots[index];
    if (existing) {
      return existing;
    }
    if (this.closed) {
      throw new AppError("UNAVAILABLE", "the API is shutting down", { retryAfterSeconds: 5 });
    }
    const worker = new Worker(new URL("./header-worker.ts", import.meta.url));
    worker.unref();
    const slot: Slot = { worker, pending: new Map(), jobs: 0, dead: false };
    const fail = (error: unknown) => {
      slot.dead = true;
      if (this.slots[index] === slot) {
        this.slots[index] = null;
      }
      for (const p of slot.pending.values()) {
        clearTimeout(p.timer);
        p.reject(unavailable(error));
      }
      slot.pending.clear();
    };
    worker.on("message", (reply: HeaderWorkerReply) => {
      const key = `${reply.type}:${reply.id}`;
      const p = slot.pending.get(key);
      if (p) {
        slot.pending.delete(key);
        clearTimeout(p.timer);
        p.resolve(reply);
      }
    });
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`header worker exited with code ${code}`)));
    this.slots[index] = slot;
    return slot;
  }

  private call(
    slot: Slot,
    request: Exclude<HeaderWorkerRequest, { type: "drop" }>,
  ): Promise<HeaderWorkerReply> {
    if (slot.dead) {
      return Promise.reject(unavailable(new Error("the header worker is gone")));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        // A worker this slow is stuck on one header: it goes, and every upload it held fails.
        void slot.worker.terminate();
      }, REQUEST_TIMEOUT_MS);
      timer.unref();
      slot.pending.set(`${request.type}:${request.id}`, { resolve, reject, timer });
      slot.worker.postMessage(request);
    });
  }
}
