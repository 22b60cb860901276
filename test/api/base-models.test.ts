import { describe, expect, it } from "vitest";
import { useHarness } from "../harness.ts";

const h = useHarness();

const body = {
  id: "qwen2.5-1.5b-instruct-awq",
  hf_name: "Qwen/Qwen2.5-1.5B-Instruct-AWQ",
  quantization: "awq",
  architecture: {
    hidden_size: 1536,
    intermediate_size: 8960,
    num_hidden_layers: 28,
    num_attention_heads: 12,
    num_key_value_heads: 2,
    vocab_size: 151936,
  },
  lora: { max_rank: 32, target_modules: ["q_proj", "v_proj"] },
  price: { input_per_mtok_usd: 0.05, output_per_mtok_usd: 0.15 },
};

describe("base models", () => {
  it("lists the seeded AWQ bases with their real dimensions to any authenticated caller", async () => {
    const tenant = await h.newTenant();
    const res = await h.request<{ data: { id: string; architecture: Record<string, number> }[] }>(
      "GET",
      "/v1/base-models",
      { token: await tenant.token(["inference"]) },
    );
    expect(res.status).toBe(200);
    const qwen = res.body.data.find((b) => b.id === "qwen2.5-7b-instruct-awq");
    expect(qwen?.architecture).toMatchObject({
      hidden_size: 3584,
      num_key_value_heads: 4,
      num_hidden_layers: 28,
    });
    const llama = res.body.data.find((b) => b.id === "llama-3.1-8b-instruct-awq");
    expect(llama?.architecture).toMatchObject({
      hidden_size: 4096,
      intermediate_size: 14336,
      vocab_size: 128256,
    });
  });

  it("registers a new base once (201) and refuses the same id again (409)", async () => {
    const token = await h.adminToken();
    const created = await h.request<typeof body>("POST", "/admin/base-models", { token, body });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ ...body, created_at: expect.any(String) });
    const again = await h.request<{ code: string }>("POST", "/admin/base-models", { token, body });
    expect(again.status).toBe(409);
    expect(again.body.code).toBe("conflict");
  });

  it.each([
    [
      "a rank vLLM does not support",
      { lora: { max_rank: 48, target_modules: ["q_proj"] } },
      /lora\.max_rank/,
    ],
    [
      "heads not a multiple of kv heads",
      { architecture: { ...body.architecture, num_key_value_heads: 5 } },
      /num_key_value_heads/,
    ],
    ["an unknown quantization", { quantization: "int3" }, /quantization/],
    ["an uppercase id", { id: "Qwen" }, /^id/],
  ])("refuses %s with 400", async (_label, patch, message) => {
    const res = await h.request<{ errors: { path: string }[] }>("POST", "/admin/base-models", {
      token: await h.adminToken(),
      body: { ...body, id: "other-base", ...patch },
    });
    expect(res.status).toBe(400);
    expect(res.body.errors.map((e) => e.path).join(",")).toMatch(message);
  });

  it("is operator-only for registration", async () => {
    const tenant = await h.newTenant();
    const res = await h.request("POST", "/admin/base-models", { token: await tenant.token(), body });
    expect(res.status).toBe(403);
  });
});
