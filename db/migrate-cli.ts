import { loadConfig } from "../lib/index.ts";
import { ensureDatabase, migrateDatabase } from "./migrate.ts";

const config = loadConfig();
await ensureDatabase(config.db.url);
await migrateDatabase(config.db.url);
process.stdout.write("migrations applied\n");
