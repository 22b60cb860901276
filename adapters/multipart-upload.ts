import type { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  type S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";

export interface StreamUploadOptions {
  bucket: string;
  key: string;
  body: Readable;
  /** Bytes per part (S3's minimum is 5 MiB for every part but the last). */
  partSize: number;
  /** Parts in flight at once. */
  concurrency: number;
  contentType?: string;
  signal?: AbortSignal;
}

/**
 * A multipart upload whose memory is fixed: `concurrency + 1` part buffers, reused. lib-storage
 * allocates a new buffer per part, and on a 1 GB adapter that garbage lifted peak RSS by over
 * 100 MiB before V8 collected it (bench/upload). On any failure the upload is aborted, so S3
 * keeps no parts.
 */
export async function uploadStream(client: S3Client, options: StreamUploadOptions): Promise<void> {
  const { bucket, key, partSize, concurrency, signal } = options;
  const created = await client.send(
    new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: options.contentType }),
    signal ? { abortSignal: signal } : {},
  );
  const uploadId = created.UploadId;
  if (!uploadId) {
    throw new Error("S3 returned no UploadId");
  }
  const free: Buffer[] = Array.from({ length: concurrency + 1 }, () => Buffer.allocUnsafe(partSize));
  const waiting: ((buffer: Buffer) => void)[] = [];
  const inFlight = new Set<Promise<void>>();
  const parts: { PartNumber: number; ETag: string }[] = [];
  let failure: unknown = null;

  const release = (buffer: Buffer) => {
    const next = waiting.shift();
    if (next) {
      next(buffer);
    } else {
      free.push(buffer);
    }
  };
  const acquire = (): Promise<Buffer> => {
    const buffer = free.pop();
    return buffer ? Promise.resolve(buffer) : new Promise((resolve) => waiting.push(resolve));
  };
  const send = (buffer: Buffer, length: number, partNumber: number) => {
    const task = client
      .send(
        new UploadPartCommand({
          Bucket: bucket,
          Key: key,
          UploadId: uploadId,
          PartNumber: partNumber,
          Body: buffer.subarray(0, length),
          ContentLength: length,
        }),
        signal ? { abortSignal: signal } : {},
      )
      .then((res) => {
        parts.push({ PartNumber: partNumber, ETag: res.ETag ?? "" });
      })
      .catch((error) => {
        failure ??= error;
      })
      .finally(() => {
        inFlight.delete(task);
        release(buffer);
      });
    inFlight.add(task);
  };

  try {
    let current = await acquire();
    let filled = 0;
    let partNumber = 1;
    for await (const chunk of options.body as AsyncIterable<Buffer>) {
      let offset = 0;
      while (offset < chunk.length) {
        if (failure !== null) {
          throw failure;
        }
        const take = Math.min(partSize - filled, chunk.length - offset);
        chunk.copy(current, filled, offset, offset + take);
        filled += take;
        offset += take;
        if (filled === partSize) {
          send(current, filled, partNumber++);
          current = await acquire();
          filled = 0;
        }
      }
    }
    if (filled > 0 || partNumber === 1) {
      send(current, filled, partNumber++);
    } else {
      release(current);
    }
    await Promise.all(inFlight);
    if (failure !== null) {
      throw failure;
    }
    parts.sort((a, b) => a.PartNumber - b.PartNumber);
    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: key,
        UploadId: uploadId,
        MultipartUpload: { Parts: parts },
      }),
    );
  } catch (error) {
    await Promise.allSettled(inFlight);
    await client
      .send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }))
      .catch(() => {});
    throw error;
  }
}
