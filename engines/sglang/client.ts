import {
  createTransport,
  healthOver,
  isTransportFailure,
  type LoadAdapterResult,
  listModelsOver,
  MAX_ANSWER_BYTES,
  metricsOver,
  parseJsonAnswer,
  type RawResponse,
  type ReplicaClient,
  type ReplicaClientOptions,
  type TransportFailure,
  type UnloadAdapterResult,
  unexpectedAnswer,
  validateAdapterPath,
  validateLoraName,
} from "../replica-client.ts";
import { parseSglangMetrics } from "./metrics.ts";

/**
 * SGLang's replica protocol as loraplane uses it (docs/engines/sglang.md, from
 * python/sglang/srt/entrypoints/http_server.py and managers/tokenizer_control_mixin.py):
 * `POST /load_lora_adapter` and `/unload_lora_adapter` (no `/v1`, admin routes) answer
 * `{success, error_message, loaded_adapters}` with 200 or 400, so a failure is known by its message;
 * `/v1/models` lists the loaded adapters with the base as `parent`; `/server_info` holds the flags
 * and the version; `/metrics` has no per-adapter gauge.
 */

interface LoraUpdateOutput {
  success: boolean;
  errorMessage: string;
}

function loraUpdateOutput(r: RawResponse): LoraUpdateOutput | null {
  const body = parseJsonAnswer(r) as { success?: unknown; error_message?: unknown } | undefined;
  if (typeof body?.success !== "boolean") {
    return null;
  }
  return {
    success: body.success,
    errorMessage: typeof body.error_message === "string" ? body.error_message : "",
  };
}

// tokenizer_control_mixin.py / lora_manager.py / lora_registry.py messages, matched by their stable parts.
const ALREADY_LOADED = [/because it is already loaded/, /^LoRA with name .* already exists/];
const LORA_DISABLED = /LoRA is not enabled/;
const UNKNOWN_NAME = /^LoRA with name .* does not exist/;
/**
 * A missing directory or adapter_config.json, in the words of the loader SGLang hands the path to:
 * a path that is not a local folder goes to huggingface_hub, which refuses an absolute one as a repo
 * id, or (offline) finds no snapshot.
 */
const PATH_MISSING =
  /(No such file or directory|Repo id must be in the form|cannot find the appropriate snapshot folder|does not appear to have a file named|Can't find 'adapter_config\.json')/;

/** SGLang's unload waits, with no limit of its own, for every request using the adapter to end. */
const DEFAULT_UNLOAD_TIMEOUT_MS = 120_000;

export function createReplicaClient(options: ReplicaClientOptions): ReplicaClient {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const defaultTimeout = options.timeoutMs ?? 10_000;
  const loadTimeout = options.loadTimeoutMs ?? 120_000;
  const adminKey = options.adminApiKey ?? options.apiKey;
  const transport = createTransport(options);

  /** A load or unload: done, refused with SGLang's message (always 400), or no usable answer. */
  async function update(
    path: "/load_lora_adapter" | "/unload_lora_adapter",
    body: Record<string, unknown>,
    timeoutMs: number,
    opts: Parameters<ReplicaClient["unloadAdapter"]>[1],
  ): Promise<{ kind: "ok" } | { kind: "refused"; status: number; message: string } | TransportFailure> {
    const r = await transport.call("POST", path, body, opts, timeoutMs, MAX_ANSWER_BYTES, adminKey);
    if (isTransportFailure(r)) {
      return r;
    }
    if (r.status === 401 || r.status === 403) {
      return { kind: "unauthorized", status: 401 };
    }
    const out = r.status === 200 || r.status === 400 ? loraUpdateOutput(r) : null;
    if (out === null) {
      return unexpectedAnswer(r);
    }
    return out.success ? { kind: "ok" } : { kind: "refused", status: r.status, message: out.errorMessage };
  }

  const client: ReplicaClient = {
    baseUrl,
    unloadDrains: true,

    async loadAdapter(input, opts): Promise<LoadAdapterResult> {
      const problem = validateLoraName(input.loraName) ?? validateAdapterPath(input.absolutePath);
      if (problem) {
        return { kind: "invalid_input", message: problem };
      }
      // SGLang splits `model` on its first colon to find the adapter: a name with one is unreachable.
      if (input.loraName.includes(":")) {
        return {
          kind: "invalid_input",
          message: `LoRA name ${JSON.stringify(input.loraName)} contains a colon`,
        };
      }
      const res = await update(
        "/load_lora_adapter",
        { lora_name: input.loraName, lora_path: input.absolutePath },
        opts?.timeoutMs ?? loadTimeout,
        opts,
      );
      if (res.kind !== "refused") {
        return res;
      }
      const { message } = res;
      if (ALREADY_LOADED.some((re) => re.test(message))) {
        return { kind: "already_loaded", message };
      }
      if (LORA_DISABLED.test(message)) {
        return { kind: "runtime_updates_disabled" };
      }
      if (PATH_MISSING.test(message)) {
        return { kind: "not_found", message };
      }
      return { kind: "adapter_rejected", status: res.status, message };
    },

    async unloadAdapter(loraName, opts): Promise<UnloadAdapterResult> {
      const problem = validateLoraName(loraName);
      if (problem) {
        return { kind: "invalid_input", message: problem };
      }
      const res = await update(
        "/unload_lora_adapter",
        { lora_name: loraName },
        opts?.timeoutMs ?? DEFAULT_UNLOAD_TIMEOUT_MS,
        opts,
      );
      if (res.kind !== "refused") {
        return res;
      }
      if (UNKNOWN_NAME.test(res.message)) {
        return { kind: "not_found", message: res.message };
      }
      if (LORA_DISABLED.test(res.message)) {
        return { kind: "runtime_updates_disabled" };
      }
      return { kind: "replica_error", status: res.status, message: res.message };
    },

    listModels: (opts) => listModelsOver(transport, opts, defaultTimeout),

    health: (opts) => healthOver(transport, opts, defaultTimeout),

    metrics: (opts) => metricsOver(transport, opts, defaultTimeout, parseSglangMetrics),

    async tokenize() {
      // Not relied on: SGLang reports usage on every streamed chunk (continuous_usage_stats), and a
      // stream cut before its first chunk is estimated from the request (metering/estimates.ts).
      return { kind: "replica_error", status: 0, message: "tokenize is not used on SGLang replicas" };
    },

    async capabilities(opts) {
      const [info, models] = await Promise.all([
        transport.call("GET", "/server_info", undefined, opts, defaultTimeout),
        client.listModels(opts),
      ]);
      if (isTransportFailure(info)) {
        return info;
      }
      if (info.status !== 200) {
        return unexpectedAnswer(info);
      }
      if (models.kind !== "ok") {
        return models;
      }
      const i = parseJsonAnswer(info) as Record<string, unknown> | undefined;
      const perBatch = i?.max_loras_per_batch;
      const first = models.value.base[0];
      return {
        kind: "ok",
        value: {
          runtimeLoraUpdating: i?.enable_lora === true,
          version: typeof i?.version === "string" ? i.version : null,
          servedModels: models.value.base.map((c) => c.id),
          maxModelLen: first?.maxModelLen ?? null,
          maxLoras: typeof perBatch === "number" ? perBatch : null,
        },
      };
    },

    close: () => transport.close(),
  };
  return client;
}
