import { createHash, type Hash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { join } from "node:path";
import { type Readable, Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { AdapterStore } from "../storage.ts";
import { CONFIG_FILE, WEIGHTS_FILE } from "./cache.ts";
import { AgentError } from "./errors.ts";

/** adapter_config.json is small; the upload path refuses anything above this. */
const CONFIG_MAX_BYTES = 1024 * 1024;

/** Counts (and optionally hashes) bytes on their way to disk; fails as soon as they exceed `limit`. */
class MeasuringTap extends Transform {
  bytes = 0;
  readonly hash: Hash | null;
  private readonly limit: number;
  private readonly tooLarge: () => Error;

  constructor(options: { hash: boolean; limit: number; tooLarge: () => Error }) {
    super();
    this.hash = options.hash ? createHash("sha256") : null;
    this.limit = options.limit;
    this.tooLarge = options.tooLarge;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) {
      callback(this.tooLarge());
      return;
    }
    this.hash?.update(chunk);
    callback(null, chunk);
  }
}

export interface AdapterObjects {
  loraName: string;
  objectKey: string;
  configObjectKey: string;
  sha256: string;
  sizeBytes: number;
}

/**
 * Fetches the two objects of an adapter version into `dir` (a temp dir inside the cache), streaming
 * the weights through a hash; nothing is held whole in memory. `reserve` runs once the objects are
 * known to exist and before the weights are written, with the bytes they will take.
 */
export async function downloadAdapter(
  store: AdapterStore,
  objects: AdapterObjects,
  dir: string,
  reserve: (bytes: number) => Promise<void>,
  signal?: AbortSignal,
): Promise<{ bytes: number }> {
  const config = await openObject(store, objects.configObjectKey, "adapter_config.json", signal);
  const configTap = new MeasuringTap({
    hash: false,
    limit: CONFIG_MAX_BYTES,
    tooLarge: () =>
      new AgentError(
        "digest_mismatch",
        `config object '${objects.configObjectKey}' is larger than ${CONFIG_MAX_BYTES} bytes; it is not a PEFT adapter_config.json`,
      ),
  });
  await copy(config, configTap, join(dir, CONFIG_FILE), objects.configObjectKey, signal);

  const weights = await openObject(store, objects.objectKey, "weights", signal);
  try {
    await reserve(configTap.bytes + objects.sizeBytes);
  } catch (error) {
    weights.destroy();
    throw error;
  }
  const weightsTap = new MeasuringTap({
    hash: true,
    limit: objects.sizeBytes,
    tooLarge: () =>
      new AgentError(
        "digest_mismatch",
        `weights object '${objects.objectKey}' holds more than the expected ${objects.sizeBytes} bytes`,
      ),
  });
  await copy(weights, weightsTap, join(dir, WEIGHTS_FILE), objects.objectKey, signal);
  const digest = weightsTap.hash?.digest("hex") ?? "";
  if (weightsTap.bytes !== objects.sizeBytes) {
    throw new AgentError(
      "digest_mismatch",
      `weights object '${objects.objectKey}' holds ${weightsTap.bytes} bytes; expected ${objects.sizeBytes}`,
    );
  }
  if (digest !== objects.sha256) {
    throw new AgentError(
      "digest_mismatch",
      `weights object '${objects.objectKey}' has sha256 ${digest}; expected ${objects.sha256}`,
    );
  }
  return { bytes: configTap.bytes + weightsTap.bytes };
}

async function openObject(
  store: AdapterStore,
  key: string,
  what: string,
  signal: AbortSignal | undefined,
): Promise<Readable> {
  let body: Readable | null;
  try {
    body = await store.get(key, signal);
  } catch (error) {
    throw new AgentError(
      "storage_unavailable",
      `could not read ${what} object '${key}' from bucket '${store.bucket}': ${errorMessage(error)}`,
      { cause: error },
    );
  }
  if (body === null) {
    throw new AgentError(
      "object_missing",
      `${what} object '${key}' does not exist in bucket '${store.bucket}'`,
    );
  }
  return body;
}

async function copy(
  body: Readable,
  tap: MeasuringTap,
  path: string,
  key: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  // `flush` fsyncs the file before the stream reports it closed.
  const out = createWriteStream(path, { flags: "wx", flush: true });
  let diskError: NodeJS.ErrnoException | undefined;
  out.once("error", (error: NodeJS.ErrnoException) => {
    diskError = error;
  });
  try {
    await pipeline(body, tap, out, signal ? { signal } : {});
  } catch (error) {
    if (error instanceof AgentError) {
      throw error;
    }
    if (signal?.aborted) {
      throw signal.reason;
    }
    if (diskError) {
      if (diskError.code === "ENOSPC" || diskError.code === "EDQUOT") {
        throw new AgentError("insufficient_storage", `the disk is full while writing '${path}'`, {
          cause: diskError,
        });
      }
      throw new AgentError("internal", `writing '${path}' failed: ${diskError.message}`, {
        cause: diskError,
      });
    }
    throw new AgentError(
      "storage_unavailable",
      `reading object '${key}' from S3 failed: ${errorMessage(error)}`,
      { cause: error },
    );
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
