import { mkdirSync } from "node:fs";
import S3rver from "s3rver";

export const S3RVER_CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };

/** An embedded S3-protocol server on a local folder (dev and tests). It does not check signatures. */
export async function startS3Server(options: { directory: string; port: number; host?: string }) {
  mkdirSync(options.directory, { recursive: true });
  const server = new S3rver({
    address: options.host ?? "127.0.0.1",
    port: options.port,
    directory: options.directory,
    silent: true,
  });
  const address = await server.run();
  return {
    endpoint: `http://${address.address}:${address.port}`,
    close: () => server.close(),
  };
}
