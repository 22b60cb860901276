import { randomFillSync } from "node:crypto";

export type IdPrefix = "ten" | "adp" | "ver" | "rep" | "req" | "plc" | "key" | "aud" | "tok";

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"; // Crockford base32, lowercase
const RANDOM_CHARS = 16;

// One CSPRNG call fills many ids' worth of bytes: a request id per request would otherwise cost a
// randomBytes call (and a Buffer) each. Bytes are used once, then the pool is refilled.
const pool = Buffer.allocUnsafe(RANDOM_CHARS * 256);
let poolOffset = pool.length;

/** A prefixed, time-ordered id: `adp_` + 10 chars of milliseconds + 16 random chars. */
export function newId(prefix: IdPrefix): string {
  let time = Date.now();
  let head = "";
  for (let i = 0; i < 10; i++) {
    head = ALPHABET[time % 32] + head;
    time = Math.floor(time / 32);
  }
  if (poolOffset + RANDOM_CHARS > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  let tail = "";
  for (let i = poolOffset; i < poolOffset + RANDOM_CHARS; i++) {
    tail += ALPHABET[(pool[i] as number) % 32];
  }
  poolOffset += RANDOM_CHARS;
  return `${prefix}_${head}${tail}`;
}

const ID_PATTERN = /^[a-z]{3}_[0-9a-z]{26}$/;

export function isId(value: string, prefix: IdPrefix): boolean {
  return value.startsWith(`${prefix}_`) && ID_PATTERN.test(value);
}
