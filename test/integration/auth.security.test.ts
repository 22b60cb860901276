import { createHmac, createPublicKey } from "node:crypto";
import { describe, expect, it } from "vitest";
import { createApp } from "../../api/app.ts";
import { KeyRing } from "../../api/auth/key-ring.ts";
import { useHarness } from "../harness.ts";
import { manualClock } from "../manual-clock.ts";
import { b64url, forgeToken, validClaims } from "../tokens.ts";

const h = useHarness();

interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  request_id: string;
}

function expectProblem(
  res: { status: number; headers: Headers; body: unknown },
  status: number,
  detail: RegExp,
) {
  expect(res.status).toBe(status);
  expect(res.headers.get("content-type")).toContain("application/problem+json");
  const body = res.body as Problem;
  expect(body).toMatchObject({
    status,
    title: expect.any(String),
    type: expect.stringMatching(/^https:\/\//),
  });
  expect(body.detail).toMatch(detail);
  expect(body.request_id).toBe(res.headers.get("x-request-id"));
}

/** An operator-only route: every forged token below would list all tenants if it were accepted. */
const ADMIN_ROUTE = "/admin/tenants";

describe("authentication rules of API.md", () => {
  it("rejects a request with no Authorization header with 401", async () => {
    const res = await h.request("GET", ADMIN_ROUTE);
    expectProblem(res, 401, /missing Authorization/);
    expect(res.headers.get("www-authenticate")).toContain("Bearer");
  });

  it("rejects a non-Bearer Authorization header with 401", async () => {
    const res = await h.request("GET", ADMIN_ROUTE, { headers: { authorization: "Basic dXNlcjpwYXNz" } });
    expectProblem(res, 401, /Bearer/);
  });

  it("rejects a token that is not a JWT with 401", async () => {
    expectProblem(await h.request("GET", ADMIN_ROUTE, { token: "not-a-jwt" }), 401, /well-formed/);
  });

  it("rejects alg none with 401", async () => {
    const active = h.deps.keyRing.activeKid;
    const token = `${b64url({ alg: "none", kid: active, typ: "JWT" })}.${b64url(validClaims())}.`;
    expectProblem(await h.request("GET", ADMIN_ROUTE, { token }), 401, /algorithm/);
  });

  it("rejects an HS256 token whose HMAC secret is the server's public key with 401", async () => {
    const jwk = h.deps.keyRing.jwks().keys[0];
    const publicPem = createPublicKey({ key: jwk as never, format: "jwk" })
      .export({ type: "spki", format: "pem" })
      .toString();
    const signingInput = `${b64url({ alg: "HS256", kid: jwk?.kid, typ: "JWT" })}.${b64url(validClaims())}`;
    const signature = createHmac("sha256", publicPem).update(signingInput).digest("base64url");
    expectProblem(
      await h.request("GET", ADMIN_ROUTE, { token: `${signingInput}.${signature}` }),
      401,
      /algorithm/,
    );
  });

  it("rejects an expired token with 401", async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = await forgeToken(h, validClaims({ iat: now - 600, exp: now - 60 }));
    expectProblem(await h.request("GET", ADMIN_ROUTE, { token }), 401, /expired/);
  });

  it("rejects a token without exp with 401", async () => {
    const { exp: _exp, ...claims } = validClaims();
    expectProblem(await h.request("GET", ADMIN_ROUTE, { token: await forgeToken(h, claims) }), 401, /'exp'/);
  });

  it("rejects a token that is not valid yet (nbf in the future) with 401", async () => {
    const token = await forgeToken(h, validClaims({ nbf: Math.floor(Date.now() / 1000) + 3600 }));
    expectProblem(await h.request("GET", ADMIN_ROUTE, { token }), 401, /not valid yet/);
  });

  it("rejects a wrong audience with 401", async () => {
    const token = await forgeToken(h, validClaims({ aud: "someone-else" }));
    expectProblem(await h.request("GET", ADMIN_ROUTE, { token }), 401, /'aud'/);
  });

  it("rejects a wrong issuer with 401", async () => {
    const token = await forgeToken(h, validClaims({ iss: "https://evil.example" }));
    expectProblem(await h.request("GET", ADMIN_ROUTE, { token }), 401, /'iss'/);
  });

  it("rejects an unknown kid with 401", async () => {
    const token = await forgeToken(h, validClaims(), { kid: "key_doesnotexist", useUnknownKey: true });
    expectProblem(await h.request("GET", ADMIN_ROUTE, { token }), 401, /unknown key/);
  });

  it("rejects a known kid whose signature is by another key with 401", async () => {
    const token = await forgeToken(h, validClaims(), { useUnknownKey: true });
    expectProblem(await h.request("GET", ADMIN_ROUTE, { token }), 401, /signature/);
  });

  it("rejects a tampered payload (tenant token edited into an operator token) with 401", async () => {
    const tenant = await h.newTenant();
    const [header, payload, signature] = (await tenant.token()).split(".");
    const claims = JSON.parse(Buffer.from(payload ?? "", "base64url").toString());
    delete claims.tenant_id;
    claims.scope = "admin";
    const token = `${header}.${b64url(claims)}.${signature}`;
    expectProblem(await h.request("GET", ADMIN_ROUTE, { token }), 401, /signature/);
  });

  it("accepts a valid operator token (the control for the cases above)", async () => {
    const res = await h.request("GET", ADMIN_ROUTE, { token: await h.adminToken() });
    expect(res.status).toBe(200);
  });
});

describe("authorisation rules of API.md", () => {
  it("answers 403 when a valid tenant token lacks the route's scope", async () => {
    const tenant = await h.newTenant();
    const token = await tenant.token(["inference"]);
    expectProblem(await h.request("GET", `/v1/tenants/${tenant.id}`, { token }), 403, /'usage:read'/);
    const allowed = await h.request("GET", `/v1/tenants/${tenant.id}`, {
      token: await tenant.token(["usage:read"]),
    });
    expect(allowed.status).toBe(200);
  });

  it("answers 403 on an operator-only route with a tenant token", async () => {
    const tenant = await h.newTenant();
    expectProblem(await h.request("GET", ADMIN_ROUTE, { token: await tenant.token() }), 403, /'admin'/);
  });

  it("answers 403 when a tenant token claims the admin scope", async () => {
    const tenant = await h.newTenant();
    const token = await forgeToken(h, validClaims({ tenant_id: tenant.id, scope: "admin usage:read" }));
    expectProblem(await h.request("GET", ADMIN_ROUTE, { token }), 403, /'admin'/);
  });

  it("answers another tenant's object exactly like a missing one (404)", async () => {
    const alice = await h.newTenant();
    const bob = await h.newTenant();
    const token = await alice.token();
    const foreign = await h.request("GET", `/v1/tenants/${bob.id}`, { token });
    const missing = await h.request("GET", "/v1/tenants/ten_00000000000000000000000000", { token });
    expectProblem(foreign, 404, /does not exist/);
    expectProblem(missing, 404, /does not exist/);
    const strip = (b: unknown) => ({ ...(b as Problem), detail: "", request_id: "" });
    expect(strip(foreign.body)).toEqual(strip(missing.body));
    expect(foreign.text).not.toContain(bob.row.name);
  });
});

describe("error shape on inference paths", () => {
  it("answers 401 in the OpenAI shape on /v1/chat/completions", async () => {
    const res = await h.request("POST", "/v1/chat/completions", { body: { model: "x", messages: [] } });
    expect(res.status).toBe(401);
    expect(res.body).toEqual({
      error: {
        message: expect.stringMatching(/Authorization/),
        type: "authentication_error",
        param: null,
        code: "unauthorized",
      },
    });
  });
});

describe("verified-token cache", () => {
  it("rejects a token once it expires even though it verified (and was cached) before", async () => {
    // The app as the harness builds it, but verifying on a clock the test moves instead of waiting.
    const clock = manualClock();
    const keyRing = await new KeyRing(h.deps.db, h.config.auth, { now: clock.now }).init();
    const app = createApp({ ...h.deps, keyRing });
    const get = async (token: string) => {
      const res = await app.request(ADMIN_ROUTE, { headers: { authorization: `Bearer ${token}` } });
      return { status: res.status, headers: res.headers, body: (await res.json()) as unknown };
    };
    const { token } = await keyRing.sign({
      subject: "operator:short",
      tenantId: null,
      scopes: ["admin"],
      ttlSeconds: 1,
    });
    expect((await get(token)).status).toBe(200);
    expect((await get(token)).status).toBe(200);
    clock.advance(2_100);
    expectProblem(await get(token), 401, /expired/);
  });
});
