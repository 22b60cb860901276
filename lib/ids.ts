import { randomBytes } from "node:crypto";

export type IdPrefix = "ten" | "adp" | "ver" | "rep" | "req" | "plc" | "key" | "aud" | "tok";

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"; // Crockford base32, lowercase

/** A prefixed, time-ordered id: `adp_` + 10 chars of milliseconds + 16 random chars. */
export function newId(prefix: IdPrefix): string {
  let time = Date.now();
  let head = "";
  for (let i = 0; i < 10; i++) {
    head = ALPHABET[time % 32] + head;
    time = Math.floor(time / 32);
  }
  const random = randomBytes(16);
  let tail = "";
  for (const byte of random) {
    tail += ALPHABET[byte % 32];
  }
  return `${prefix}_${head}${tail}`;
}

const ID_PATTERN = /^[a-z]{3}_[0-9a-z]{26}$/;

export function isId(value: string, prefix: IdPrefix): boolean {
  return value.startsWith(`${prefix}_`) && ID_PATTERN.test(value);
}
