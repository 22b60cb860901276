import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../deps.ts";

export const CONSOLE_PAGES = ["fleet", "demand", "tenants", "planner"] as const;
export type ConsolePage = (typeof CONSOLE_PAGES)[number];

const TITLES: Record<ConsolePage, string> = {
  fleet: "Fleet",
  demand: "Demand",
  tenants: "Tenants",
  planner: "Planner",
};

const assetsDir = new URL("./assets/", import.meta.url);
const require = createRequire(import.meta.url);

interface Asset {
  type: string;
  file: () => string;
}

const JS = "text/javascript; charset=utf-8";
const ASSETS = new Map<string, Asset>([
  ["console.js", { type: JS, file: () => new URL("console.js", assetsDir).pathname }],
  [
    "console.css",
    { type: "text/css; charset=utf-8", file: () => new URL("console.css", assetsDir).pathname },
  ],
  // chart.js exports no subpath for its UMD build: it sits beside the CommonJS entry in dist/.
  ["chart.umd.js", { type: JS, file: () => join(dirname(require.resolve("chart.js")), "chart.umd.min.js") }],
]);

/** Read on first use and kept: the console is a handful of static files and one chart library. */
const cache = new Map<string, string>();
function readAsset(name: string, asset: Asset): string {
  let body = cache.get(name);
  if (body === undefined) {
    body = readFileSync(asset.file(), "utf8");
    cache.set(name, body);
  }
  return body;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/**
 * The page shell: no data in it (every number comes from the admin JSON API, called with the
 * operator's token from sessionStorage), so it is served like the static assets.
 */
function shell(page: ConsolePage): string {
  const nav = CONSOLE_PAGES.map(
    (p) => `<a href="/console/${p}"${p === page ? ' aria-current="page"' : ""}>${TITLES[p]}</a>`,
  ).join("");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>loraplane · ${escapeHtml(TITLES[page])}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/console/assets/console.css">
<script src="/console/assets/chart.umd.js" defer></script>
<script src="/console/assets/console.js" defer></script>
</head>
<body data-page="${page}">
<header><strong>loraplane</strong><nav>${nav}</nav><span id="status" data-testid="status"></span>
<button id="logout" type="button">Forget token</button></header>
<main id="main">
<form id="login" hidden>
<h1>Admin token</h1>
<p>The console calls the admin API with an operator token (<code>npm run token -- --admin</code>). It is kept in this tab's session storage only.</p>
<input id="token" name="token" type="password" autocomplete="off" required placeholder="eyJ…">
<button type="submit">Open the console</button>
<p id="login-error" class="error"></p>
</form>
<div id="page"></div>
</main>
</body>
</html>`;
}

export function registerConsole(app: OpenAPIHono<AppEnv>) {
  app.get("/console", (c) => c.redirect("/console/fleet", 302));
  for (const page of CONSOLE_PAGES) {
    const html = shell(page);
    app.get(`/console/${page}`, (c) => {
      c.header("cache-control", "no-store");
      return c.html(html);
    });
  }
  app.get("/console/assets/:file", (c) => {
    const name = c.req.param("file");
    const asset = ASSETS.get(name);
    if (!asset) {
      return c.notFound();
    }
    c.header("content-type", asset.type);
    c.header("cache-control", "public, max-age=300");
    return c.body(readAsset(name, asset));
  });
}
