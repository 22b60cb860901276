/** A clock the test moves by hand: leases and tokens run out when it says so, not after a real wait. */
export function manualClock(start = Date.now()) {
  let at = start;
  return {
    now: () => at,
    advance: (ms: number) => {
      at += ms;
    },
  };
}
