import {
  createTransport,
  healthOver,
  isTransportFailure,
  listModelsOver,
  metricsOver,
  parseErrorBody,
  parseJsonAnswer,
  type ReplicaClient,
  type ReplicaClientOptions,
  unexpectedAnswer,
  validateAdapterPath,
  validateLoraName,
} from "../replica-client.ts";
import { parsePrometheusText, summarizeMetrics } from "./metrics.ts";

/**
 * vLLM's replica protocol (../shared/vllm-replica-protocol.md): `/v1/load_lora_adapter` and
 * `/v1/unload_lora_adapter` (with VLLM_ALLOW_RUNTIME_LORA_UPDATING), `/v1/models`, `/health`,
 * `/metrics`, `/tokenize`, `/version`.
 */

const ENGINE_DEAD = "EngineCore encountered an issue";
const LORA_DISABLED = "LoRA is not enabled";

export function createReplicaClient(options: ReplicaClientOptions): ReplicaClient {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const defaultTimeout = options.timeoutMs ?? 10_000;
  const loadTimeout = options.loadTimeoutMs ?? 120_000;
  const transport = createTransport(options);

  const client: ReplicaClient = {
    baseUrl,
    unloadDrains: false,

    async loadAdapter(input, opts) {
      const nameProblem = validateLoraName(input.loraName);
      if (nameProblem) {
        return { kind: "invalid_input", message: nameProblem };
      }
      const pathProblem = validateAdapterPath(input.absolutePath);
      if (pathProblem) {
        return { kind: "invalid_input", message: pathProblem };
      }
      // Never load_inplace: it reloads from disk on every generation and reuses stale prefix KV.
      const r = await transport.call(
        "POST",
        "/v1/load_lora_adapter",
        { lora_name: input.loraName, lora_path: input.absolutePath },
        opts,
        loadTimeout,
      );
      if (isTransportFailure(r)) {
        return r;
      }
      if (r.status === 200) {
        return { kind: "ok" };
      }
      const err = parseErrorBody(r.text);
      if (r.status === 404 && err?.detail === "Not Found") {
        return { kind: "runtime_updates_disabled" };
      }
      if (r.status === 404 && err) {
        return { kind: "not_found", message: err.message };
      }
      if (r.status === 400 && err?.message.includes("has already been loaded")) {
        return { kind: "already_loaded", message: err.message };
      }
      if (
        (r.status === 400 || r.status === 500) &&
        err &&
        err.detail === null &&
        !err.message.includes(ENGINE_DEAD) &&
        !err.message.includes(LORA_DISABLED)
      ) {
        return { kind: "adapter_rejected", status: r.status, message: err.message };
      }
      return unexpectedAnswer(r);
    },

    async unloadAdapter(loraName, opts) {
      const nameProblem = validateLoraName(loraName);
      if (nameProblem) {
        return { kind: "invalid_input", message: nameProblem };
      }
      const r = await transport.call(
        "POST",
        "/v1/unload_lora_adapter",
        { lora_name: loraName },
        opts,
        defaultTimeout,
      );
      if (isTransportFailure(r)) {
        return r;
      }
      if (r.status === 200) {
        return { kind: "ok" };
      }
      const err = parseErrorBody(r.text);
      if (r.status === 404 && err?.detail === "Not Found") {
        return { kind: "runtime_updates_disabled" };
      }
      if (r.status === 404 && err) {
        return { kind: "not_found", message: err.message };
      }
      return unexpectedAnswer(r);
    },

    listModels: (opts) => listModelsOver(transport, opts, defaultTimeout),

    health: (opts) => healthOver(transport, opts, defaultTimeout),

    metrics: (opts) =>
      metricsOver(transport, opts, defaultTimeout, (text) => summarizeMetrics(parsePrometheusText(text))),

    async tokenize(input, opts) {
      const body =
        "prompt" in input
          ? { model: input.model, prompt: input.prompt, add_special_tokens: input.addSpecialTokens ?? true }
          : {
              model: input.model,
              messages: input.messages,
              add_generation_prompt: input.addGenerationPrompt ?? true,
            };
      const r = await transport.call("POST", "/tokenize", body, opts, defaultTimeout);
      if (isTransportFailure(r)) {
        return r;
      }
      if (r.status === 404) {
        const err = parseErrorBody(r.text);
        if (err && err.detail === null) {
          return { kind: "not_found", message: err.message };
        }
      }
      if (r.status !== 200) {
        return unexpectedAnswer(r);
      }
      const b = parseJsonAnswer(r) as
        | { count?: unknown; tokens?: unknown; max_model_len?: unknown }
        | undefined;
      if (typeof b?.count !== "number" || !Array.isArray(b.tokens) || typeof b.max_model_len !== "number") {
        return { kind: "replica_error", status: r.status, message: "malformed /tokenize body" };
      }
      return {
        kind: "ok",
        value: { count: b.count, tokens: b.tokens as number[], maxModelLen: b.max_model_len },
      };
    },

    async capabilities(opts) {
      // An empty name is refused (400) by an enabled replica before anything happens; a replica
      // without VLLM_ALLOW_RUNTIME_LORA_UPDATING has no such route (404 {"detail":"Not Found"}).
      const probe = await transport.call(
        "POST",
        "/v1/unload_lora_adapter",
        { lora_name: "" },
        opts,
        defaultTimeout,
      );
      if (isTransportFailure(probe)) {
        return probe;
      }
      let runtimeLoraUpdating: boolean;
      if (probe.status === 400) {
        runtimeLoraUpdating = true;
      } else if (probe.status === 404 && parseErrorBody(probe.text)?.detail === "Not Found") {
        runtimeLoraUpdating = false;
      } else {
        return unexpectedAnswer(probe);
      }
      const [version, models, metrics] = await Promise.all([
        transport.call("GET", "/version", undefined, opts, defaultTimeout),
        client.listModels(opts),
        client.metrics(opts),
      ]);
      if (isTransportFailure(version)) {
        return version;
      }
      if (models.kind !== "ok") {
        return models;
      }
      const v =
        version.status === 200 ? (parseJsonAnswer(version) as { version?: unknown } | undefined) : undefined;
      const first = models.value.base[0];
      return {
        kind: "ok",
        value: {
          runtimeLoraUpdating,
          version: typeof v?.version === "string" ? v.version : null,
          servedModels: models.value.base.map((c) => c.id),
          maxModelLen: first?.maxModelLen ?? null,
          maxLoras: metrics.kind === "ok" ? (metrics.value.lora?.maxLora ?? null) : null,
        },
      };
    },

    close: () => transport.close(),
  };
  return client;
}
