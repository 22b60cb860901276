import { createPrivateKey } from "node:crypto";
import { generateKeyPair, type JWTPayload, SignJWT } from "jose";
import { decryptPrivateKey } from "../api/auth/key-ring.ts";
import { listVerifiableKeys } from "../db/queries/signing-keys.ts";
import type { Harness } from "./harness.ts";

/**
 * Signs arbitrary claims with the harness's real active key (decrypted the way the server does),
 * so security tests can build tokens the minting API would never produce.
 */
export async function forgeToken(
  h: Harness,
  payload: JWTPayload,
  options: { kid?: string; alg?: string; useUnknownKey?: boolean } = {},
): Promise<string> {
  const rows = await listVerifiableKeys(h.deps.db, new Date());
  const active = rows.find((r) => r.retiredAt === null);
  if (!active) {
    throw new Error("no active key");
  }
  const key = options.useUnknownKey
    ? (await generateKeyPair("ES256")).privateKey
    : createPrivateKey(decryptPrivateKey(active.privateKeyEncrypted, h.config.auth.keyEncryptionKey));
  return new SignJWT(payload)
    .setProtectedHeader({ alg: options.alg ?? "ES256", kid: options.kid ?? active.kid, typ: "JWT" })
    .sign(key);
}

export function validClaims(overrides: JWTPayload = {}): JWTPayload {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: "loraplane",
    aud: "loraplane",
    sub: "operator:forged",
    iat: now,
    exp: now + 300,
    jti: "tok_forged",
    scope: "admin adapters:read usage:read",
    ...overrides,
  };
}

export function b64url(value: unknown): string {
  return Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
}

export function decodeHeader(token: string): { kid?: string; alg?: string } {
  return JSON.parse(Buffer.from(token.split(".")[0] ?? "", "base64url").toString("utf8"));
}
