// The project's boundaries, checked by `npm run lint` (docs/architecture.md explains them).
// The service's folders: each is entered from the others only through its index.ts.
const SERVICE = "(adapters|api|db|engines|lib|metering|scheduler)";

module.exports = {
  forbidden: [
    {
      name: "no-cycles",
      comment: "Modules form no import cycle: each can be read, loaded and tested before its importers.",
      severity: "error",
      from: {},
      to: { circular: true },
    },
    {
      name: "one-entry-per-folder",
      comment:
        "A service folder is entered from another only through its index.ts (api/ reaches the " +
        "scheduler through scheduler/index.ts, the gateway reaches vLLM through engines/index.ts). " +
        "Tests, benchmarks and infra/ (the composition roots) may reach inside.",
      severity: "error",
      from: { path: `^${SERVICE}/`, pathNot: "\\.test\\.ts$" },
      to: { path: `^${SERVICE}/`, pathNot: ["^$1/", `^${SERVICE}/index\\.ts$`] },
    },
    {
      name: "pure-cores",
      comment:
        "The placement policy and the adapter validator are pure: they import nothing outside their " +
        "own folder but zod (no I/O, no database, no clock but the one passed in). The validator's " +
        "worker-thread pool is its only I/O and sits beside it.",
      severity: "error",
      from: {
        path: "^(scheduler/policy|adapters/validate)/",
        pathNot: ["(header-pool|header-worker)\\.ts$", "\\.test\\.ts$"],
      },
      to: { pathNot: ["^$1/", "^node_modules/zod/"] },
    },
    {
      name: "simulator-stands-alone",
      comment:
        "The replica simulator is a stand-in for a real engine: it shares no code with the service, " +
        "so the service cannot pass its tests by agreeing with itself.",
      severity: "error",
      from: { path: "^infra/replica-sim/", pathNot: "\\.test\\.ts$" },
      to: { path: `^(${SERVICE.slice(1, -1)}|test|bench)/` },
    },
    {
      name: "no-unresolvable",
      comment: "An import that does not resolve is a typo or a missing dependency.",
      severity: "error",
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^(node_modules|db/migrations)/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default"],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
