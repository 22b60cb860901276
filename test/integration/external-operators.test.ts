import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, describe, expect, it } from "vitest";
import { useHarness } from "../harness.ts";

// The opt-in: an operator deliberately lets the identity provider's users without a tenant be operators.
const ISSUER = "https://idp.ops.example";
const idp = await generateKeyPair("RS256");
const jwk = { ...(await exportJWK(idp.publicKey)), kid: "ops-1", alg: "RS256", use: "sig" };
let server: Server;
const port = await new Promise<number>((resolve) => {
  server = createServer((_req, res) => res.end(JSON.stringify({ keys: [jwk] })));
  server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port));
});
afterAll(() => server.close());

const h = useHarness({
  EXTERNAL_JWT_ISSUER: ISSUER,
  EXTERNAL_JWT_AUDIENCE: "loraplane",
  EXTERNAL_JWT_JWKS_URL: `http://127.0.0.1:${port}/jwks`,
  EXTERNAL_JWT_OPERATORS: "true",
});

describe("EXTERNAL_JWT_OPERATORS=true", () => {
  it("makes an external token without a tenant an operator with the scopes it carries", async () => {
    const token = await new SignJWT({ scope: "admin" })
      .setProtectedHeader({ alg: "RS256", kid: "ops-1" })
      .setIssuer(ISSUER)
      .setAudience("loraplane")
      .setSubject("ops-user")
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(idp.privateKey);
    expect((await h.request("GET", "/admin/tenants", { token })).status).toBe(200);
  });
});
