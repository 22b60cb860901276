import { createHash } from "node:crypto";
import { Readable, Transform, type TransformCallback } from "node:stream";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";
import Busboy from "busboy";
import { AppError, type FieldProblem } from "../lib/index.ts";
import type { AdapterStore } from "./storage.ts";
import type { BaseModelSpec } from "./validate/base-spec.ts";
import type { HeaderJob, HeaderValidationPool } from "./validate/header-pool.ts";
import { type AdapterSummary, checkAdapterConfig } from "./validate/index.ts";
import { SafetensorsHeaderReader } from "./validate/safetensors.ts";

/** adapter_config.json is small; anything larger is not a PEFT config. */
const CONFIG_MAX_BYTES = 1024 * 1024;
/**
 * The largest safetensors header an upload may have. A PEFT LoRA's header lists two tensors per
 * adapted module per layer, about 140 bytes each: all seven linear modules of a 126-layer model
 * (Llama 3.1 405B) make 1,764 entries, about 250 KB. Eight times that leaves room for any real
 * adapter, while a header a tenant inflates on purpose stays small enough to parse in about a second
 * (off the event loop, see HeaderValidationPool).
 */
export const UPLOAD_MAX_HEADER_BYTES = 2 * 1024 * 1024;
/** Ceiling for one adapter file whatever the tenant's limit (a rank-512 fp32 all-linear 70B is ~11 GB). */
export const ADAPTER_MAX_BYTES = 16 * 1024 ** 3;
/**
 * After a refusal the rest of the body is read and dropped, so that the client, still sending, gets
 * the answer instead of a reset connection; past this much, or this long, the connection is cut.
 */
const DRAIN_MAX_BYTES = 1024 ** 3;
const DRAIN_MAX_MS = 60_000;
/** Multipart framing and the config part ride on top of the weights in Content-Length. */
const MULTIPART_SLACK_BYTES = CONFIG_MAX_BYTES + 64 * 1024;

export interface StoredAdapterFiles {
  sha256: string;
  sizeBytes: number;
  modelKey: string;
  configKey: string;
  configText: string;
  summary: AdapterSummary;
}

export interface ReceiveAdapterInput {
  /** Object key prefix of this version, e.g. `tenants/<t>/adapters/<a>/<ver>/`. */
  keyPrefix: string;
  base: BaseModelSpec;
  maxBytes: number | null;
  contentType: string | undefined;
  contentLength: number | undefined;
  body: Readable | ReadableStream<Uint8Array> | null;
  /** Fires when the client goes away: the upload is aborted and nothing is left behind. */
  signal: AbortSignal;
  /** Parses and checks the safetensors header off the event loop. */
  validator: HeaderValidationPool;
}

const unprocessable = (message: string, errors: FieldProblem[] = []) =>
  new AppError("UNPROCESSABLE", message, { errors });

/**
 * Hashes and measures the weights on their way to S3, feeding the header reader as they pass; once
 * the header is whole it goes to a worker thread to be parsed (once) and checked.
 */
class WeightsTap extends Transform {
  readonly hash = createHash("sha256");
  readonly reader = new SafetensorsHeaderReader({
    maxHeaderBytes: UPLOAD_MAX_HEADER_BYTES,
    parseJson: false,
  });
  job: HeaderJob | null = null;
  private readonly onHeader: (bytes: Uint8Array) => HeaderJob;

  constructor(onHeader: (bytes: Uint8Array) => HeaderJob) {
    super();
    this.onHeader = onHeader;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    const state = this.reader.push(chunk);
    if (state.state === "complete" && this.job === null) {
      this.job = this.onHeader(state.headerBytes.slice());
    }
    if (state.state === "rejected") {
      callback(
        unprocessable(
          "adapter_model is not a valid safetensors file",
          state.errors.map((e) => ({ path: e.path, message: e.message })),
        ),
      );
      return;
    }
    callback(null, chunk);
  }
}

/**
 * Streams a multipart upload (`adapter_config`, `adapter_model`) into S3 under `keyPrefix`,
 * hashing and validating as the bytes pass; the weights are never held whole in memory. On any
 * failure (bad files, limits, client disconnect) the multipart upload is aborted and every object
 * written is deleted before the error is thrown.
 */
export async function receiveAdapterFiles(
  store: AdapterStore,
  input: ReceiveAdapterInput,
): Promise<StoredAdapterFiles> {
  const limit = Math.min(input.maxBytes ?? ADAPTER_MAX_BYTES, ADAPTER_MAX_BYTES);
  if (input.contentLength !== undefined && input.contentLength > limit + MULTIPART_SLACK_BYTES) {
    throw new AppError(
      "PAYLOAD_TOO_LARGE",
      `the upload is ${input.contentLength} bytes; this tenant's adapters may be at most ${limit} bytes`,
      { reason: "max_adapter_bytes_exceeded" },
    );
  }
  if (!input.contentType?.toLowerCase().startsWith("multipart/form-data")) {
    throw new AppError(
      "VALIDATION",
      "send the files as multipart/form-data with parts adapter_config and adapter_model",
    );
  }
  if (!input.body) {
    throw new AppError("VALIDATION", "the request has no body");
  }
  const modelKey = `${input.keyPrefix}adapter_model.safetensors`;
  const configKey = `${input.keyPrefix}adapter_config.json`;
  const abort = new AbortController();
  const onClientGone = () =>
    abort.abort(new AppError("VALIDATION", "the client disconnected during the upload"));
  input.signal.addEventListener("abort", onClientGone, { once: true });

  const jobs: { current: HeaderJob | null } = { current: null };
  try {
    const received = await parseParts(store, input, {
      limit,
      modelKey,
      abort,
      onJob: (job) => {
        jobs.current = job;
      },
    });
    if (received.configText === null || received.tap === null) {
      const missing = [
        received.configText === null && "adapter_config",
        received.tap === null && "adapter_model",
      ]
        .filter(Boolean)
        .join(" and ");
      throw unprocessable(`the upload has no ${missing} part`, [
        ...(received.configText === null ? [{ path: "adapter_config", message: "part is missing" }] : []),
        ...(received.tap === null ? [{ path: "adapter_model", message: "part is missing" }] : []),
      ]);
    }
    const { tap, configText } = received;
    const end = tap.reader.end();
    if (end.state === "rejected" || tap.job === null) {
      throw unprocessable(
        "adapter_model is not a valid safetensors file",
        end.state === "rejected" ? end.errors : [],
      );
    }
    const job = tap.job;
    const result = await job.finish({ configText, totalSize: tap.reader.bytesSeen, base: input.base });
    if (!result.ok) {
      throw unprocessable(
        `the adapter does not fit base model '${input.base.id}': ${result.errors.length} problem(s)`,
        result.errors.map((e) => ({ path: e.path, message: e.message })),
      );
    }
    await store.put(configKey, configText, "application/json");
    return {
      sha256: tap.hash.digest("hex"),
      sizeBytes: tap.reader.bytesSeen,
      modelKey,
      configKey,
      configText,
      summary: result.summary,
    };
  } catch (error) {
    abort.abort(error);
    jobs.current?.drop();
    // The multipart upload is aborted above; an object that did complete, and the config, go here.
    await store.delete([modelKey, configKey]).catch(() => {});
    throw error;
  } finally {
    input.signal.removeEventListener("abort", onClientGone);
  }
}

/**
 * Reads what the client still sends and drops it, within bounds (see DRAIN_MAX_BYTES), so that an
 * answer sent before the body's end reaches the client. A body already being read is left alone.
 */
export function discardRest(source: Readable): void {
  if (source.readableEnded || source.destroyed || source.listenerCount("data") > 0) {
    return;
  }
  let dropped = 0;
  const cut = setTimeout(() => source.destroy(), DRAIN_MAX_MS);
  cut.unref();
  source.on("data", (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > DRAIN_MAX_BYTES) {
      source.destroy();
    }
  });
  source.once("close", () => clearTimeout(cut));
  source.once("error", () => clearTimeout(cut));
  source.resume();
}

async function parseParts(
  store: AdapterStore,
  input: ReceiveAdapterInput,
  ctx: { limit: number; modelKey: string; abort: AbortController; onJob: (job: HeaderJob) => void },
): Promise<{ configText: string | null; tap: WeightsTap | null }> {
  const body = input.body;
  if (!body) {
    throw new AppError("VALIDATION", "the request has no body");
  }
  let busboy: Busboy.Busboy;
  try {
    busboy = Busboy({
      headers: { "content-type": input.contentType ?? "" },
      limits: {
        files: 3,
        fields: 2,
        parts: 4,
        fileSize: ctx.limit,
        fieldSize: CONFIG_MAX_BYTES,
        headerPairs: 50,
      },
    });
  } catch (error) {
    throw new AppError("VALIDATION", `the multipart body is malformed: ${(error as Error).message}`);
  }
  const source = body instanceof Readable ? body : Readable.fromWeb(body as NodeReadableStream<Uint8Array>);
  let configText: string | null = null;
  let tap: WeightsTap | null = null;
  let upload: Promise<void> | null = null;
  let failure: unknown = null;

  return new Promise((resolve, reject) => {
    const fail = (error: unknown) => {
      if (failure === null) {
        failure = error;
        ctx.abort.abort(error);
      }
    };
    ctx.abort.signal.addEventListener(
      "abort",
      () => {
        failure ??= ctx.abort.signal.reason;
        source.unpipe(busboy);
        tap?.destroy();
        busboy.destroy();
        if (input.signal.aborted) {
          source.destroy();
        } else {
          discardRest(source);
        }
        settle();
      },
      { once: true },
    );
    let settled = false;
    const settle = () => {
      if (settled) {
        return;
      }
      settled = true;
      Promise.allSettled([upload ?? Promise.resolve()]).then(([outcome]) => {
        if (failure === null && outcome?.status === "rejected") {
          failure = outcome.reason;
        }
        if (failure !== null) {
          reject(failure);
        } else {
          resolve({ configText, tap });
        }
      });
    };

    // A bad config fails the upload at once instead of after gigabytes of weights.
    const acceptConfig = (text: string) => {
      configText = text;
      const early = checkAdapterConfig(text, input.base);
      if (early.errors.length > 0) {
        fail(
          unprocessable(
            `adapter_config does not fit base model '${input.base.id}': ${early.errors.length} problem(s)`,
            early.errors.map((e) => ({ path: e.path, message: e.message })),
          ),
        );
      }
    };
    busboy.on("file", (name, stream, info) => {
      // A cut body ends every open part with an error: each part stream needs a listener.
      stream.on("error", fail);
      if (name === "adapter_config") {
        const chunks: Buffer[] = [];
        let size = 0;
        stream.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > CONFIG_MAX_BYTES) {
            fail(
              unprocessable(
                `adapter_config is larger than ${CONFIG_MAX_BYTES} bytes: it is not a PEFT config`,
              ),
            );
            return;
          }
          chunks.push(chunk);
        });
        stream.on("end", () => acceptConfig(Buffer.concat(chunks).toString("utf8")));
        return;
      }
      if (name === "adapter_model") {
        if (tap !== null) {
          stream.resume();
          fail(unprocessable("the upload has two adapter_model parts"));
          return;
        }
        if (/\.(bin|pt|pth|pkl|ckpt)$/i.test(info.filename ?? "")) {
          stream.resume();
          fail(
            unprocessable(`adapter_model '${info.filename}' is a pickle file`, [
              {
                path: "adapter_model",
                message:
                  "only safetensors are accepted: loading pickle (.bin/.pt) runs code on the GPU hosts",
              },
            ]),
          );
          return;
        }
        const current = new WeightsTap((bytes) => {
          const job = input.validator.begin(bytes, UPLOAD_MAX_HEADER_BYTES);
          ctx.onJob(job);
          // A header that is wrong on its own fails the upload now, not after the rest of the weights.
          job.early.then((errors) => {
            if (errors.length > 0) {
              fail(unprocessable("adapter_model is not a valid safetensors file", errors));
            }
          }, fail);
          return job;
        });
        tap = current;
        stream.on("limit", () =>
          fail(
            new AppError(
              "PAYLOAD_TOO_LARGE",
              `adapter_model is larger than this tenant's limit of ${ctx.limit} bytes`,
              {
                reason: "max_adapter_bytes_exceeded",
              },
            ),
          ),
        );
        stream.on("error", fail);
        current.on("error", fail);
        stream.pipe(current);
        upload = store
          .upload(ctx.modelKey, current, {
            signal: ctx.abort.signal,
            contentType: "application/octet-stream",
          })
          .catch((error) => {
            fail(error);
            throw error;
          });
        return;
      }
      stream.resume();
      fail(
        new AppError("VALIDATION", `unknown part '${name}': send exactly adapter_config and adapter_model`, {
          errors: [{ path: name, message: "unknown part" }],
        }),
      );
    });
    busboy.on("field", (name, value, info) => {
      if (name === "adapter_config") {
        if (info.valueTruncated) {
          fail(
            unprocessable(`adapter_config is larger than ${CONFIG_MAX_BYTES} bytes: it is not a PEFT config`),
          );
          return;
        }
        acceptConfig(value);
        return;
      }
      fail(
        new AppError(
          "VALIDATION",
          name === "adapter_model"
            ? "adapter_model must be sent as a file part (with a filename), not a text field"
            : `unknown part '${name}': send exactly adapter_config and adapter_model`,
          { errors: [{ path: name, message: "unexpected part" }] },
        ),
      );
    });
    busboy.on("partsLimit", () =>
      fail(new AppError("VALIDATION", "too many parts: send adapter_config and adapter_model")),
    );
    busboy.on("filesLimit", () =>
      fail(new AppError("VALIDATION", "too many files: send adapter_config and adapter_model")),
    );
    busboy.on("error", (error) =>
      fail(new AppError("VALIDATION", `the multipart body is malformed: ${(error as Error).message}`)),
    );
    busboy.on("close", settle);
    source.on("error", fail);
    source.pipe(busboy);
  });
}
