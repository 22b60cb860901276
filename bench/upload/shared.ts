import { readFileSync } from "node:fs";
import { Upload } from "@aws-sdk/lib-storage";
import { createS3Client } from "../../adapters/storage.ts";
import { SEEDED_BASE_MODELS } from "../../adapters/validate/base-spec.ts";
import { S3RVER_CREDENTIALS } from "../../infra/dev/s3-server.ts";
import { ALL_LINEAR_MODULES, adapterModelStream, configBuffer } from "../../test/fixtures/generate.ts";

const llama = SEEDED_BASE_MODELS.find((b) => b.id === "llama-3.1-8b-instruct-awq");
if (!llama) {
  throw new Error("llama seed missing");
}
/** Llama-3.1-8B with rank 128 allowed: an all-linear rank-96 F32 adapter on it is ~1.0 GB. */
export const BENCH_BASE = { ...llama, id: "bench-llama-3.1-8b-r128", loraMaxRank: 128 };
export const ADAPTER_OPTIONS = {
  rank: 96,
  dtype: "F32",
  targetModules: ALL_LINEAR_MODULES,
  // Content does not change the cost of hashing or storing bytes; zeros keep the generator cheap.
  fill: "zeros",
} as const;

export function benchModel() {
  return adapterModelStream(BENCH_BASE, ADAPTER_OPTIONS, 1 << 20);
}

export function benchConfig(): Buffer {
  return configBuffer(BENCH_BASE, ADAPTER_OPTIONS);
}

export function rssKiB(pid: number | "self", field: "VmRSS" | "VmHWM"): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
}

const RAW_PART_SIZE = 5 * 1024 * 1024;
const RAW_QUEUE_SIZE = 2;

export const RawUpload = {
  async rawUpload(endpoint: string, bucket: string, key: string) {
    const client = createS3Client({
      endpoint,
      region: "us-east-1",
      bucket,
      forcePathStyle: true,
      ...S3RVER_CREDENTIALS,
    });
    const before = rssKiB("self", "VmRSS");
    const model = benchModel();
    const started = performance.now();
    // The same part size and parallelism as loraplane's uploader (adapters/storage.ts).
    await new Upload({
      client,
      params: { Bucket: bucket, Key: key, Body: model.stream(), ContentType: "application/octet-stream" },
      partSize: RAW_PART_SIZE,
      queueSize: RAW_QUEUE_SIZE,
    }).done();
    const ms = performance.now() - started;
    client.destroy();
    return { ms, bytes: model.totalSize, rssGrowthKiB: rssKiB("self", "VmHWM") - before };
  },
};
