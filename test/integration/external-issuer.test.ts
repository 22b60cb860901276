import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../lib/env.ts";
import { useHarness } from "../harness.ts";

const ISSUER = "https://idp.test.example";
const AUDIENCE = "loraplane-prod";

const idp = await generateKeyPair("RS256");
const jwk = { ...(await exportJWK(idp.publicKey)), kid: "idp-key-1", alg: "RS256", use: "sig" };
let jwksServer: Server;
const jwksPort = await new Promise<number>((resolve) => {
  jwksServer = createServer((_req, res) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ keys: [jwk] }));
  });
  jwksServer.listen(0, "127.0.0.1", () => resolve((jwksServer.address() as AddressInfo).port));
});
afterAll(() => jwksServer.close());

const h = useHarness({
  EXTERNAL_JWT_ISSUER: ISSUER,
  EXTERNAL_JWT_AUDIENCE: AUDIENCE,
  EXTERNAL_JWT_JWKS_URL: `http://127.0.0.1:${jwksPort}/jwks`,
  EXTERNAL_JWT_TENANT_CLAIM: "org_id",
  EXTERNAL_JWT_SCOPE_CLAIM: "permissions",
});

function idpToken(claims: Record<string, unknown>, audience = AUDIENCE) {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "RS256", kid: "idp-key-1" })
    .setIssuer(ISSUER)
    .setAudience(audience)
    .setSubject("user-42")
    .setIssuedAt()
    .setExpirationTime("5m")
    .sign(idp.privateKey);
}

let tenantId = "";
beforeAll(async () => {
  tenantId = (await h.newTenant()).id;
});

describe("a trusted external identity provider", () => {
  it("accepts its tokens, reading the tenant and scopes from the configured claims", async () => {
    const token = await idpToken({ org_id: tenantId, permissions: ["usage:read", "inference"] });
    const res = await h.request<{ id: string }>("GET", `/v1/tenants/${tenantId}`, { token });
    expect(res.status).toBe(200);
    expect(res.body.id).toBe(tenantId);
  });

  it("keeps tenant isolation for external tokens", async () => {
    const other = await h.newTenant();
    const token = await idpToken({ org_id: tenantId, permissions: "usage:read" });
    expect((await h.request("GET", `/v1/tenants/${other.id}`, { token })).status).toBe(404);
  });

  it("rejects its tokens for another audience with 401", async () => {
    const token = await idpToken({ org_id: tenantId, permissions: "usage:read" }, "someone-else");
    expect((await h.request("GET", `/v1/tenants/${tenantId}`, { token })).status).toBe(401);
  });

  it("still accepts loraplane's own tokens", async () => {
    expect((await h.request("GET", "/admin/tenants", { token: await h.adminToken() })).status).toBe(200);
  });
});

describe("an external identity provider is not trusted with operator power by default", () => {
  it("refuses its token without a tenant (it would be an operator) and never lets it carry admin", async () => {
    const operatorLike = await idpToken({ permissions: ["admin", "usage:read"] });
    const res = await h.request<{ detail: string }>("GET", "/admin/tenants", { token: operatorLike });
    expect(res.status).toBe(401);
    expect(res.body.detail).toMatch(/tenant/);
  });

  it("refuses to start with an external issuer equal to loraplane's own", () => {
    expect(() =>
      parseConfig({
        KEY_ENCRYPTION_KEY: Buffer.alloc(32).toString("base64"),
        JWT_ISSUER: "loraplane",
        EXTERNAL_JWT_ISSUER: "loraplane",
        EXTERNAL_JWT_AUDIENCE: AUDIENCE,
        EXTERNAL_JWT_JWKS_URL: "http://127.0.0.1:1/jwks",
      }),
    ).toThrow(/EXTERNAL_JWT_ISSUER/);
  });
});
