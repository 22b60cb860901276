/** The simulated upstream's stream timing: first token after TTFT_MS, then MORE_TOKENS more, TOKEN_GAP_MS apart. */
export const TTFT_MS = 20;
export const MORE_TOKENS = 7;
export const TOKEN_GAP_MS = 1;
