// s3rver in a process of its own, so that the benchmark's client and the server it measures do not share a thread.
import { startS3Server } from "../../infra/dev/s3-server.ts";

const directory = process.argv[2];
if (!directory) {
  throw new Error("usage: s3-server-main.ts <directory>");
}
const server = await startS3Server({ directory, port: 0 });
process.stdout.write(`${server.endpoint}\n`);
process.on("SIGTERM", () => {
  void server.close().then(() => process.exit(0));
});
