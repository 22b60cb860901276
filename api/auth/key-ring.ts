import { createPrivateKey, type KeyObject } from "node:crypto";
import {
  createRemoteJWKSet,
  decodeJwt,
  exportJWK,
  exportPKCS8,
  generateKeyPair,
  importJWK,
  type JWK,
  type JWTPayload,
  errors as joseErrors,
  jwtVerify,
  SignJWT,
} from "jose";
import { LRUCache } from "lru-cache";
import type { Database } from "../../db/index.ts";
import { activateSigningKey, listVerifiableKeys } from "../../db/index.ts";
import type { Config } from "../../lib/index.ts";
import { newId, openSecret, sealSecret, UnauthorizedError } from "../../lib/index.ts";
import { OPERATOR_ONLY_SCOPES, parseScopeClaim, type Scope } from "./scopes.ts";

export const AUDIENCE = "loraplane";
const ALG = "ES256";
/** Another process may have rotated: an unknown kid re-reads the keys, at most this often. */
const UNKNOWN_KID_REFRESH_MS = 2_000;
/**
 * Verified tokens are remembered (by their full text, signature included) until they expire, so a
 * client's token costs one signature check, not one per request. Bounded by count and by bytes (a
 * token is a client's string): the least recently used go first.
 */
const VERIFIED_CACHE_SIZE = 10_000;
const VERIFIED_CACHE_BYTES = 32 * 1024 * 1024;
/** Keys are re-read this often even without news of a rotation (a CLI rotation publishes none). */
export const KEY_REFRESH_MS = 30_000;

export interface Principal {
  subject: string;
  tenantId: string | null;
  scopes: Set<Scope>;
  tokenId: string | null;
  expiresAt: number;
}

type VerificationKey = Awaited<ReturnType<typeof importJWK>>;

interface VerifyingKey {
  kid: string;
  publicJwk: JWK;
  key: VerificationKey;
  /** A retired key verifies until then (ms since the epoch); null for the signing key. */
  verifyUntil: number | null;
}

/** A verified principal, and the key its token was signed with (null: the external issuer's). */
interface VerifiedToken {
  principal: Principal;
  kid: string | null;
}

export function decryptPrivateKey(sealed: string, kek: Buffer): string {
  return openSecret(sealed, kek);
}

async function newSealedKey(kek: Buffer) {
  const { publicKey, privateKey } = await generateKeyPair(ALG, { extractable: true });
  const kid = newId("key");
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: ALG, use: "sig" };
  return {
    kid,
    alg: ALG,
    publicJwk,
    privateKeyEncrypted: sealSecret(await exportPKCS8(privateKey), kek),
  };
}

/**
 * Loraplane's own token keys (read from Postgres, cached in memory) plus an optional trusted
 * external issuer. Verification is local and allocation-light: no database round trip per request.
 */
export class KeyRing {
  private verifying = new Map<string, VerifyingKey>();
  private readonly verified: LRUCache<string, VerifiedToken>;
  private refresher: NodeJS.Timeout | null = null;
  private signing: { kid: string; key: KeyObject } | null = null;
  private lastRefresh = 0;
  private refreshing: Promise<void> | null = null;
  private readonly external: ReturnType<typeof createRemoteJWKSet> | null;
  private readonly db: Database;
  private readonly config: Config["auth"];
  private readonly now: () => number;

  /** `now`: the clock (ms since the epoch) tokens expire and retired keys lapse by; tests move it. */
  constructor(db: Database, config: Config["auth"], options: { now?: () => number } = {}) {
    this.db = db;
    this.config = config;
    this.now = options.now ?? Date.now;
    this.verified = new LRUCache<string, VerifiedToken>({
      max: VERIFIED_CACHE_SIZE,
      maxSize: VERIFIED_CACHE_BYTES,
      sizeCalculation: (_, token) => token.length,
      ttlAutopurge: false,
      // The cache's TTLs run on the injected clock too; by default, lru-cache's own (performance.now).
      ...(options.now && { perf: { now: options.now } }),
    });
    this.external = config.external ? createRemoteJWKSet(new URL(config.external.jwksUrl)) : null;
  }

  /** Creates the first signing key if none exists, then loads the keys. */
  async init(): Promise<this> {
    await activateSigningKey(this.db, await newSealedKey(this.config.keyEncryptionKey), {
      onlyIfNone: true,
      verifyUntil: new Date(this.now() + this.config.maxTtlSeconds * 1000),
    });
    await this.refresh();
    return this;
  }

  /** New tokens are signed with a new key; the old one verifies until its last token expires. */
  async rotate(): Promise<string> {
    const sealed = await newSealedKey(this.config.keyEncryptionKey);
    await activateSigningKey(this.db, sealed, {
      onlyIfNone: false,
      verifyUntil: new Date(this.now() + this.config.maxTtlSeconds * 1000),
    });
    await this.refresh();
    return sealed.kid;
  }

  async refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const rows = await listVerifiableKeys(this.db, new Date(this.now()));
        const next = new Map<string, VerifyingKey>();
        let signing: typeof this.signing = null;
        for (const row of rows) {
          next.set(row.kid, {
            kid: row.kid,
            publicJwk: row.publicJwk,
            key: await importJWK(row.publicJwk, row.alg),
            verifyUntil: row.retiredAt === null ? null : (row.verifyUntil?.getTime() ?? 0),
          });
          if (row.retiredAt === null) {
            let pem: string;
            try {
              pem = decryptPrivateKey(row.privateKeyEncrypted, this.config.keyEncryptionKey);
            } catch (error) {
              throw new Error(
                `signing key ${row.kid} cannot be decrypted: KEY_ENCRYPTION_KEY is not the key it was stored with ` +
                  "(restore the original KEY_ENCRYPTION_KEY; for a throwaway dev database, drop it to start afresh)",
                { cause: error },
              );
            }
            signing = { kid: row.kid, key: createPrivateKey(pem) };
          }
        }
        this.verifying = next;
        this.signing = signing;
        this.lastRefresh = this.now();
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  /** Re-reads the keys every `everyMs` (rotations another process made, retired keys past their time). */
  startRefreshing(everyMs = KEY_REFRESH_MS): void {
    this.refresher ??= setInterval(() => {
      void this.refresh().catch(() => {});
    }, everyMs);
    this.refresher.unref();
  }

  stopRefreshing(): void {
    if (this.refresher) {
      clearInterval(this.refresher);
      this.refresher = null;
    }
  }

  get activeKid(): string | null {
    return this.signing?.kid ?? null;
  }

  jwks(): { keys: JWK[] } {
    return { keys: [...this.verifying.values()].map((k) => k.publicJwk) };
  }

  async sign(claims: { subject: string; tenantId: string | null; scopes: Scope[]; ttlSeconds: number }) {
    // The signing key is read afresh (minting is rare): a key rotated by another API copy is used
    // at once, never a retired one whose verification window may end before this token does.
    await this.refresh();
    const signing = this.signing;
    if (!signing) {
      throw new Error("no active signing key: call init() first");
    }
    const ttl = Math.min(claims.ttlSeconds, this.config.maxTtlSeconds);
    const now = Math.floor(this.now() / 1000);
    const payload: JWTPayload = { scope: claims.scopes.join(" ") };
    if (claims.tenantId !== null) {
      payload.tenant_id = claims.tenantId;
    }
    const token = await new SignJWT(payload)
      .setProtectedHeader({ alg: ALG, kid: signing.kid, typ: "JWT" })
      .setIssuer(this.config.issuer)
      .setAudience(AUDIENCE)
      .setSubject(claims.subject)
      .setIssuedAt(now)
      .setExpirationTime(now + ttl)
      .setJti(newId("tok"))
      .sign(signing.key);
    return { token, expiresAt: new Date((now + ttl) * 1000), kid: signing.kid };
  }

  /** Verifies a bearer token; every failure is an UnauthorizedError saying what was wrong. */
  async verify(token: string): Promise<Principal> {
    const now = this.now();
    const cached = this.verified.get(token);
    if (cached) {
      if (
        cached.principal.expiresAt * 1000 > now &&
        (cached.kid === null || this.verifiable(cached.kid, now))
      ) {
        return cached.principal;
      }
      this.verified.delete(token);
    }
    const { principal, kid } = await this.verifyUncached(token, now);
    const ttl = principal.expiresAt * 1000 - now;
    if (ttl > 0) {
      this.verified.set(token, { principal, kid }, { ttl });
    }
    return principal;
  }

  /** The key is known and, if retired, still inside its verification window. */
  private verifiable(kid: string, now: number): boolean {
    const key = this.verifying.get(kid);
    return key !== undefined && (key.verifyUntil === null || now < key.verifyUntil);
  }

  private async verifyUncached(token: string, now: number): Promise<VerifiedToken> {
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(token);
    } catch {
      throw new UnauthorizedError("the bearer token is not a well-formed JWT");
    }
    try {
      if (this.external && unverified.iss === this.config.external?.issuer) {
        return { principal: await this.verifyExternal(token, now), kid: null };
      }
      const { payload, protectedHeader } = await jwtVerify(token, (header) => this.lookupKey(header.kid), {
        issuer: this.config.issuer,
        audience: AUDIENCE,
        algorithms: [ALG],
        requiredClaims: ["exp", "iat", "sub"],
        currentDate: new Date(now),
      });
      return { principal: toPrincipal(payload, "tenant_id", "scope"), kid: protectedHeader.kid ?? null };
    } catch (error) {
      throw toUnauthorized(error);
    }
  }

  private async lookupKey(kid: string | undefined): Promise<VerificationKey> {
    if (!kid) {
      throw new UnauthorizedError("the token header has no 'kid'");
    }
    let found = this.verifying.get(kid);
    if (!found && this.now() - this.lastRefresh > UNKNOWN_KID_REFRESH_MS) {
      await this.refresh();
      found = this.verifying.get(kid);
    }
    if (!found) {
      throw new UnauthorizedError(`the token was signed with an unknown key '${kid}'`);
    }
    if (!this.verifiable(kid, this.now())) {
      throw new UnauthorizedError(
        `the token was signed with a retired key '${kid}' past its verification window`,
      );
    }
    return found.key;
  }

  private async verifyExternal(token: string, now: number): Promise<Principal> {
    const external = this.config.external;
    if (!this.external || !external) {
      throw new UnauthorizedError("no external issuer is configured");
    }
    const { payload } = await jwtVerify(token, this.external, {
      issuer: external.issuer,
      audience: external.audience,
      algorithms: ["ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "EdDSA"],
      requiredClaims: ["exp", "sub"],
      currentDate: new Date(now),
    });
    const principal = toPrincipal(payload, external.tenantClaim, external.scopeClaim);
    if (principal.tenantId === null && !external.operators) {
      throw new UnauthorizedError(
        `the external issuer's token names no tenant (claim '${external.tenantClaim}'); its operators are not trusted here`,
      );
    }
    return principal;
  }
}

function toPrincipal(payload: JWTPayload, tenantClaim: string, scopeClaim: string): Principal {
  const tenant = payload[tenantClaim];
  const tenantId = typeof tenant === "string" && tenant.length > 0 ? tenant : null;
  const scopes = parseScopeClaim(payload[scopeClaim]);
  if (tenantId !== null) {
    // Operator power never rides on a tenant's token, whatever its scope claim says.
    for (const scope of OPERATOR_ONLY_SCOPES) {
      scopes.delete(scope);
    }
  }
  return {
    subject: payload.sub ?? "",
    tenantId,
    scopes,
    tokenId: payload.jti ?? null,
    expiresAt: payload.exp ?? 0,
  };
}

function toUnauthorized(error: unknown): UnauthorizedError {
  if (error instanceof UnauthorizedError) {
    return error;
  }
  if (error instanceof joseErrors.JWTExpired) {
    return new UnauthorizedError("the token has expired");
  }
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    const claim = error.claim;
    if (claim === "nbf") {
      return new UnauthorizedError("the token is not valid yet (nbf is in the future)");
    }
    if (claim === "iat" && error.reason === "check_failed") {
      return new UnauthorizedError("the token's 'iat' is in the future");
    }
    if (error.reason === "missing") {
      return new UnauthorizedError(`the token has no '${claim}' claim`);
    }
    return new UnauthorizedError(`the token's '${claim}' claim is not accepted`);
  }
  if (error instanceof joseErrors.JOSEAlgNotAllowed) {
    return new UnauthorizedError("the token's signing algorithm is not accepted (ES256 only)");
  }
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) {
    return new UnauthorizedError("the token's signature does not verify");
  }
  if (error instanceof joseErrors.JWKSNoMatchingKey) {
    return new UnauthorizedError("the token was signed with an unknown key");
  }
  if (error instanceof joseErrors.JOSEError) {
    return new UnauthorizedError(`the token is invalid: ${error.message}`);
  }
  return new UnauthorizedError("the token could not be verified");
}
