import { createPrivateKey, type KeyObject } from "node:crypto";
import { SignJWT } from "jose";
import { afterAll, describe, expect, it } from "vitest";
import { decryptPrivateKey } from "../../api/auth/key-ring.ts";
import { listVerifiableKeys } from "../../db/queries/signing-keys.ts";
import { type ApiProcess, startApiProcess } from "../api-process.ts";
import { eventually } from "../eventually.ts";
import { useHarness } from "../harness.ts";
import { decodeHeader, validClaims } from "../tokens.ts";

// Tokens live 5 s at most here, so a retired key verifies for 5 s after a rotation.
const TTL = { TOKEN_MAX_TTL_SECONDS: "5", TOKEN_DEFAULT_TTL_SECONDS: "5" };
const h = useHarness(TTL);
const copies: ApiProcess[] = [];
afterAll(() => {
  for (const c of copies) {
    c.kill();
  }
});

async function activeKey(): Promise<{ kid: string; key: KeyObject }> {
  const row = (await listVerifiableKeys(h.deps.db, new Date())).find((r) => r.retiredAt === null);
  if (!row) {
    throw new Error("no active key");
  }
  return {
    kid: row.kid,
    key: createPrivateKey(decryptPrivateKey(row.privateKeyEncrypted, h.config.auth.keyEncryptionKey)),
  };
}

describe("a key rotation reaches every API copy", () => {
  it("makes the other copy sign with the new key at once and refuse the retired key after its verify-until", async () => {
    const copyB = await startApiProcess(h.config, TTL);
    copies.push(copyB);
    const admin = await h.adminToken();
    const tenant = await h.newTenant();
    const old = await activeKey();
    // A token signed with the key about to be retired, valid (by its own exp) for 5 minutes: what a
    // leaked key lets anyone mint.
    const leaked = await new SignJWT(validClaims({ exp: Math.floor(Date.now() / 1000) + 300 }))
      .setProtectedHeader({ alg: "ES256", kid: old.kid, typ: "JWT" })
      .sign(old.key);
    const asB = (token: string) =>
      fetch(`${copyB.url}/admin/tenants`, { headers: { authorization: `Bearer ${token}` } });
    expect((await asB(leaked)).status).toBe(200);

    // Copy A (this process) rotates.
    const rotated = await h.request<{ kid: string }>("POST", "/admin/signing-keys/rotate", { token: admin });
    expect(rotated.status).toBe(201);
    const minted = await fetch(`${copyB.url}/admin/tenants/${tenant.id}/tokens`, {
      method: "POST",
      headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" },
      body: JSON.stringify({ scope: "inference" }),
    });
    expect(minted.status).toBe(201);
    expect(decodeHeader(((await minted.json()) as { token: string }).token).kid).toBe(rotated.body.kid);

    // Until the retired key's verify-until, copy B still accepts what it signed; once it has passed,
    // neither copy does. B is another process, whose clock no test can move: the 5 s are waited out.
    expect((await asB(leaked)).status).toBe(200);
    const retired = (await listVerifiableKeys(h.deps.db, new Date())).find((r) => r.kid === old.kid);
    const verifyUntil = retired?.verifyUntil?.getTime() ?? Number.POSITIVE_INFINITY;
    await eventually(async () => (await asB(leaked)).status === 401, 15_000, 200);
    expect(Date.now()).toBeGreaterThanOrEqual(verifyUntil);
    expect((await h.request("GET", "/admin/tenants", { token: leaked })).status).toBe(401);
  });
});
