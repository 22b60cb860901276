import { describe, expect, it } from "vitest";
import { KeyRing } from "../../api/auth/key-ring.ts";
import { useHarness } from "../harness.ts";
import { manualClock } from "../manual-clock.ts";
import { decodeHeader, forgeToken, validClaims } from "../tokens.ts";

const h = useHarness();

describe("signing key rotation", () => {
  it("keeps a token signed before rotation valid, signs new tokens with the new kid, publishes both keys", async () => {
    const admin = await h.adminToken();
    const oldKid = decodeHeader(admin).kid;
    const rotated = await h.request<{ kid: string }>("POST", "/admin/signing-keys/rotate", { token: admin });
    expect(rotated.status).toBe(201);
    expect(rotated.body.kid).not.toBe(oldKid);

    expect((await h.request("GET", "/admin/tenants", { token: admin })).status).toBe(200);

    const fresh = await h.adminToken();
    expect(decodeHeader(fresh).kid).toBe(rotated.body.kid);
    expect((await h.request("GET", "/admin/tenants", { token: fresh })).status).toBe(200);

    const jwks = await h.request<{ keys: { kid: string; d?: string }[] }>("GET", "/.well-known/jwks.json");
    expect(jwks.body.keys.map((k) => k.kid)).toEqual(expect.arrayContaining([oldKid, rotated.body.kid]));
    expect(jwks.body.keys.every((k) => k.d === undefined)).toBe(true);
  });

  it("still rejects an expired token signed by the retired key", async () => {
    const before = h.deps.keyRing.activeKid;
    const now = Math.floor(Date.now() / 1000);
    const expired = await forgeToken(h, validClaims({ iat: now - 120, exp: now - 1 }));
    await h.deps.keyRing.rotate();
    expect(decodeHeader(expired).kid).toBe(before);
    const res = await h.request<{ detail: string }>("GET", "/admin/tenants", { token: expired });
    expect(res.status).toBe(401);
    expect(res.body.detail).toMatch(/expired/);
  });

  it("lets another API copy verify tokens of a key rotated in elsewhere (unknown kid re-reads the keys)", async () => {
    const clock = manualClock();
    const otherCopy = await new KeyRing(h.deps.db, h.config.auth, { now: clock.now }).init();
    await h.deps.keyRing.rotate();
    const { token } = await h.deps.keyRing.sign({
      subject: "x",
      tenantId: null,
      scopes: ["admin"],
      ttlSeconds: 120,
    });
    // An unknown kid re-reads the keys at most every 2 s: not yet, then once the copy's clock moves.
    await expect(otherCopy.verify(token)).rejects.toThrow(/unknown key/);
    clock.advance(2_100);
    const principal = await otherCopy.verify(token);
    expect(principal.scopes.has("admin")).toBe(true);
  });
});

describe("signing after a rotation made by another API copy", () => {
  it("signs new tokens with the rotated key in every copy, not only the one that rotated", async () => {
    const otherCopy = await new KeyRing(h.deps.db, h.config.auth).init();
    const before = otherCopy.activeKid;
    const rotatedKid = await h.deps.keyRing.rotate();
    expect(rotatedKid).not.toBe(before);
    const { token, kid } = await otherCopy.sign({
      subject: "operator:other-copy",
      tenantId: null,
      scopes: ["admin"],
      ttlSeconds: 120,
    });
    expect(kid).toBe(rotatedKid);
    expect(decodeHeader(token).kid).toBe(rotatedKid);
    // The token it minted is accepted by the copy that rotated, over HTTP.
    expect((await h.request("GET", "/admin/tenants", { token })).status).toBe(200);
  });
});

describe("a wrong KEY_ENCRYPTION_KEY", () => {
  it("fails at start with a message naming the variable, not a bare cipher error", async () => {
    const wrong = { ...h.config.auth, keyEncryptionKey: Buffer.alloc(32, 9) };
    await expect(new KeyRing(h.deps.db, wrong).init()).rejects.toThrow(
      /KEY_ENCRYPTION_KEY is not the key it was stored with/,
    );
  });
});
