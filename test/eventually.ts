/** Polls `check` until it holds, or fails the test after `timeoutMs` (for state other processes change). */
export async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 10_000, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) {
      return;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`condition not met within ${timeoutMs} ms`);
}
