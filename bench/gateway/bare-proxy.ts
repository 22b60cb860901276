// The floor for any Node gateway on this machine: a proxy that does nothing but forward. node:http
// in, an undici Pool out, the body streamed both ways; no auth, no rate limit, no usage write. It
// shows how much of direct's throughput a gateway can keep at all when it shares the cores with the
// client and the upstream. Prints its URL on stdout once listening.
// Usage: node bench/gateway/bare-proxy.ts UPSTREAM_URL
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { pipeline } from "node:stream/promises";
import { Pool } from "undici";

const upstream = process.argv[2];
if (!upstream) {
  throw new Error("usage: node bench/gateway/bare-proxy.ts UPSTREAM_URL");
}
const pool = new Pool(upstream, { connections: 256 });

const server = createServer(async (req, res) => {
  try {
    const answer = await pool.request({
      method: "POST",
      path: req.url ?? "/",
      headers: { "content-type": req.headers["content-type"] ?? "application/json" },
      body: req,
    });
    const contentType = answer.headers["content-type"];
    res.writeHead(answer.statusCode, typeof contentType === "string" ? { "content-type": contentType } : {});
    await pipeline(answer.body, res);
  } catch {
    res.destroy();
  }
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
});
