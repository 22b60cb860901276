import { defineConfig } from "vitest/config";

/** No services: pure code, the replica simulator, files on disk. `npm run test:unit` runs only these. */
const UNIT = [
  "{adapters,api,db,engines,infra,lib,metering,scheduler}/**/*.test.ts",
  "test/fixtures/**/*.test.ts",
  "test/deploy/**/*.test.ts",
  "test/conformance/**/*.test.ts",
  "test/agent/config.test.ts",
];
/** Unit files that start the real processes against Postgres and Redis. */
const UNIT_EXCEPTIONS = ["test/deploy/entrypoint.test.ts"];
const IGNORED = ["**/node_modules/**"];

const withServices = {
  // Postgres and Redis (started if stopped), a migrated template database, an S3 server, a usage Redis.
  globalSetup: ["test/setup/global.ts"],
};

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: "forks",
    reporters: ["default"],
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          include: UNIT,
          exclude: [...IGNORED, ...UNIT_EXCEPTIONS],
          // Modules load once per worker, not once per file: a fifth of the ring's time was imports.
          isolate: false,
        },
      },
      {
        extends: true,
        test: {
          name: "integration",
          include: [
            "test/{agent,api,db,fleet,integration,metering,scheduler}/**/*.test.ts",
            ...UNIT_EXCEPTIONS,
          ],
          exclude: [...IGNORED, "test/agent/config.test.ts"],
          ...withServices,
        },
      },
      {
        extends: true,
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          exclude: IGNORED,
          // A worker runs file after file in one process: modules load once, and files that share a
          // world (useE2EWorld's `shared`) start it once. Each world has its own database and prefix.
          isolate: false,
          ...withServices,
        },
      },
      {
        extends: true,
        test: {
          name: "browser",
          include: ["test/browser/**/*.test.ts"],
          exclude: IGNORED,
          // A page's first paint in chromium can take seconds when the machine is busy (1 s failed in CI).
          expect: { poll: { timeout: 10_000 } },
          ...withServices,
        },
      },
    ],
  },
});
