import type { Logger } from "./logger.ts";

export interface Closer {
  name: string;
  close: () => Promise<unknown>;
}

/**
 * Runs closers in order (HTTP first so no new work arrives, then workers, then pools), racing a
 * deadline: a stuck closer must not keep a pod in Terminating forever.
 */
export async function closeAll(closers: Closer[], timeoutMs: number, logger: Logger): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
    timer.unref();
  });
  const work = (async () => {
    for (const closer of closers) {
      try {
        await closer.close();
        logger.debug({ closer: closer.name }, "closed");
      } catch (error) {
        logger.error({ err: error, closer: closer.name }, "close failed");
      }
    }
    return true;
  })();
  const finished = await Promise.race([work, deadline]);
  clearTimeout(timer);
  return finished;
}

/** On SIGTERM or SIGINT, close everything within the deadline and exit (1 if the deadline won). */
export function installShutdown(closers: Closer[], timeoutMs: number, logger: Logger): void {
  let shuttingDown = false;
  const handler = (signal: NodeJS.Signals) => {
    if (shuttingDown) {
      return;
    }
    shuttingDown = true;
    logger.info({ signal, timeoutMs }, "shutting down");
    void closeAll(closers, timeoutMs, logger).then((clean) => {
      if (!clean) {
        logger.error({ timeoutMs }, "shutdown deadline passed; exiting anyway");
      }
      process.exit(clean ? 0 : 1);
    });
  };
  process.on("SIGTERM", handler);
  process.on("SIGINT", handler);
}
