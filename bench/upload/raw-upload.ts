// One raw lib-storage upload of the benchmark adapter, in its own process so that its RSS is its own.
import { RawUpload } from "./shared.ts";

const [endpoint, bucket, key] = process.argv.slice(2);
if (!endpoint || !bucket || !key) {
  throw new Error("usage: raw-upload.ts <endpoint> <bucket> <key>");
}
const result = await RawUpload.rawUpload(endpoint, bucket, key);
process.stdout.write(`${JSON.stringify(result)}\n`);
