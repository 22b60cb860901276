import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";

/**
 * Secrets at rest (token signing keys, fallback upstreams' API keys) are sealed with AES-256-GCM
 * under KEY_ENCRYPTION_KEY: `v1.<iv>.<tag>.<ciphertext>`, base64 parts. A wrong key or a tampered
 * value fails to open rather than yielding garbage.
 */
export function sealSecret(plain: string, kek: Buffer): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", kek, iv);
  const body = Buffer.concat([cipher.update(plain, "utf8"), cipher.final()]);
  return ["v1", iv.toString("base64"), cipher.getAuthTag().toString("base64"), body.toString("base64")].join(
    ".",
  );
}

export function openSecret(sealed: string, kek: Buffer): string {
  const [version, iv, tag, body] = sealed.split(".");
  if (version !== "v1" || !iv || !tag || !body) {
    throw new Error("sealed secret has an unknown format");
  }
  // A full 16-byte tag only: GCM would otherwise accept a truncated one, which is easier to forge.
  const decipher = createDecipheriv("aes-256-gcm", kek, Buffer.from(iv, "base64"), { authTagLength: 16 });
  decipher.setAuthTag(Buffer.from(tag, "base64"));
  return Buffer.concat([decipher.update(Buffer.from(body, "base64")), decipher.final()]).toString("utf8");
}
