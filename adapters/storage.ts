import type { Readable } from "node:stream";
import {
  CreateBucketCommand,
  DeleteObjectsCommand,
  GetBucketLifecycleConfigurationCommand,
  GetObjectCommand,
  HeadBucketCommand,
  type LifecycleRule,
  ListObjectsV2Command,
  PutBucketLifecycleConfigurationCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import type { Config } from "../lib/index.ts";
import { uploadStream } from "./multipart-upload.ts";

/** What the rest of loraplane sees of object storage; the AWS SDK stays behind it. */
export interface AdapterStore {
  readonly bucket: string;
  ping(signal?: AbortSignal): Promise<void>;
  ensureBucket(): Promise<void>;
  /** Streams `body` to `key` as a multipart upload; aborting the signal aborts the upload (no object). */
  upload(
    key: string,
    body: Readable,
    options?: { signal?: AbortSignal; contentType?: string },
  ): Promise<void>;
  put(key: string, body: Buffer | string, contentType: string): Promise<void>;
  get(key: string, signal?: AbortSignal): Promise<Readable | null>;
  delete(keys: string[]): Promise<void>;
  list(prefix: string): Promise<string[]>;
  /** Objects under `prefix` with when they were written, `limit` at most (oldest pages first). */
  listObjects(prefix: string, limit: number): Promise<{ key: string; lastModified: Date }[]>;
  /**
   * Sets the bucket's rule that aborts multipart uploads left incomplete (a process that died mid-upload)
   * after a day. False when the server does not implement lifecycle rules (s3rver) or refuses.
   */
  ensureLifecycle(): Promise<boolean>;
  close(): void;
}

/** Multipart uploads a process left behind (it died mid-upload) are aborted by the bucket itself. */
const ABORT_INCOMPLETE_UPLOADS: LifecycleRule = {
  ID: "loraplane-abort-incomplete-uploads",
  Status: "Enabled",
  Filter: { Prefix: "" },
  AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 },
};

/** Multipart part size: an upload holds (UPLOAD_CONCURRENCY + 1) × UPLOAD_PART_SIZE of buffers. */
const UPLOAD_PART_SIZE = 5 * 1024 * 1024;
const UPLOAD_CONCURRENCY = 2;

export function createS3Client(config: Config["s3"]): S3Client {
  return new S3Client({
    region: config.region,
    ...(config.endpoint !== undefined && { endpoint: config.endpoint }),
    forcePathStyle: config.forcePathStyle,
    // The default bakes an empty-body checksum into streaming PUTs, which some S3-compatible servers reject.
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    ...(config.accessKeyId !== undefined &&
      config.secretAccessKey !== undefined && {
        credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey },
      }),
  });
}

const isStatus = (error: unknown, status: number) =>
  error instanceof S3ServiceException && error.$metadata.httpStatusCode === status;

export function createS3Storage(config: Config["s3"]): AdapterStore & { client: S3Client } {
  const client = createS3Client(config);
  const bucket = config.bucket;
  return {
    client,
    bucket,
    async ping(signal) {
      await client.send(new HeadBucketCommand({ Bucket: bucket }), signal ? { abortSignal: signal } : {});
    },
    async ensureBucket() {
      try {
        await client.send(new HeadBucketCommand({ Bucket: bucket }));
      } catch (error) {
        if (isStatus(error, 404)) {
          await client.send(new CreateBucketCommand({ Bucket: bucket }));
          return;
        }
        throw error;
      }
    },
    async upload(key, body, options = {}) {
      await uploadStream(client, {
        bucket,
        key,
        body,
        partSize: UPLOAD_PART_SIZE,
        concurrency: UPLOAD_CONCURRENCY,
        ...(options.contentType !== undefined && { contentType: options.contentType }),
        ...(options.signal !== undefined && { signal: options.signal }),
      });
    },
    async put(key, body, contentType) {
      await client.send(
        new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: contentType }),
      );
    },
    async get(key, signal) {
      try {
        const res = await client.send(
          new GetObjectCommand({ Bucket: bucket, Key: key }),
          signal ? { abortSignal: signal } : {},
        );
        return (res.Body as Readable | undefined) ?? null;
      } catch (error) {
        if (isStatus(error, 404)) {
          return null;
        }
        throw error;
      }
    },
    async delete(keys) {
      for (let i = 0; i < keys.length; i += 1000) {
        const batch = keys.slice(i, i + 1000);
        if (batch.length > 0) {
          await client.send(
            new DeleteObjectsCommand({
              Bucket: bucket,
              Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
            }),
          );
        }
      }
    },
    async listObjects(prefix, limit) {
      const objects: { key: string; lastModified: Date }[] = [];
      let token: string | undefined;
      do {
        const res = await client.send(
          new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
        );
        for (const item of res.Contents ?? []) {
          if (item.Key && objects.length < limit) {
            objects.push({ key: item.Key, lastModified: item.LastModified ?? new Date() });
          }
        }
        token = res.IsTruncated && objects.length < limit ? res.NextContinuationToken : undefined;
      } while (token);
      return objects;
    },
    async ensureLifecycle() {
      try {
        // The bucket's other rules are kept: ours is added, or replaced by its id.
        let rules: LifecycleRule[] = [];
        try {
          rules =
            (await client.send(new GetBucketLifecycleConfigurationCommand({ Bucket: bucket }))).Rules ?? [];
        } catch (error) {
          if (!isStatus(error, 404)) {
            throw error;
          }
        }
        await client.send(
          new PutBucketLifecycleConfigurationCommand({
            Bucket: bucket,
            LifecycleConfiguration: {
              Rules: [...rules.filter((r) => r.ID !== ABORT_INCOMPLETE_UPLOADS.ID), ABORT_INCOMPLETE_UPLOADS],
            },
          }),
        );
        return true;
      } catch {
        return false;
      }
    },
    async list(prefix) {
      const keys: string[] = [];
      let token: string | undefined;
      do {
        const res = await client.send(
          new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
        );
        for (const item of res.Contents ?? []) {
          if (item.Key) {
            keys.push(item.Key);
          }
        }
        token = res.IsTruncated ? res.NextContinuationToken : undefined;
      } while (token);
      return keys;
    },
    close() {
      client.destroy();
    },
  };
}
