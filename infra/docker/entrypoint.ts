/**
 * The image's one entry point: `node infra/docker/entrypoint.ts <command> [args]`. Each command runs
 * the same module `npm run <command>` runs, in this process, so signals reach it directly (tini is PID 1).
 */
const COMMANDS = {
  api: "../../api/main.ts",
  scheduler: "../../scheduler/main.ts",
  metering: "../../metering/main.ts",
  agent: "../../adapters/agent/main.ts",
  migrate: "../../db/migrate-cli.ts",
  token: "../../api/cli/token.ts",
  "replica-sim": "../replica-sim/cli.ts",
} as const;

export type EntrypointCommand = keyof typeof COMMANDS;
export const ENTRYPOINT_COMMANDS = Object.keys(COMMANDS) as EntrypointCommand[];

function isCommand(name: string | undefined): name is EntrypointCommand {
  return name !== undefined && Object.hasOwn(COMMANDS, name);
}

if (import.meta.main) {
  const [command, ...args] = process.argv.slice(2);
  if (!isCommand(command)) {
    process.stderr.write(
      `usage: node infra/docker/entrypoint.ts <${ENTRYPOINT_COMMANDS.join("|")}> [args]\n` +
        (command === undefined ? "" : `unknown command: ${command}\n`),
    );
    process.exit(2);
  }
  // The command's module sees its own arguments, as under `npm run <command> -- args`.
  const target = new URL(COMMANDS[command], import.meta.url);
  process.argv = [process.argv[0] ?? process.execPath, target.pathname, ...args];
  if (command === "replica-sim") {
    const { runReplicaSimCli } = await import("../replica-sim/cli.ts");
    await runReplicaSimCli();
  } else {
    await import(target.href);
  }
}
