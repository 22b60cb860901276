import { CreateBucketCommand, HeadBucketCommand, S3Client, S3ServiceException } from "@aws-sdk/client-s3";
import type { Config } from "../lib/env.ts";

/** What the rest of loraplane sees of object storage; the AWS SDK stays behind it. */
export interface AdapterStore {
  readonly bucket: string;
  ping(signal?: AbortSignal): Promise<void>;
  ensureBucket(): Promise<void>;
  close(): void;
}

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
        if (error instanceof S3ServiceException && error.$metadata.httpStatusCode === 404) {
          await client.send(new CreateBucketCommand({ Bucket: bucket }));
          return;
        }
        throw error;
      }
    },
    close() {
      client.destroy();
    },
  };
}
