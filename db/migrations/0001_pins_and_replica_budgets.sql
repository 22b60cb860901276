ALTER TABLE "adapters" ADD COLUMN "pin_replicas" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
-- Existing replicas get budgets derived from their CPU cache, then the defaults go: new rows must say.
ALTER TABLE "replicas" ADD COLUMN "max_registered" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
UPDATE "replicas" SET "max_registered" = GREATEST("max_cpu_loras" * 4, 8);--> statement-breakpoint
ALTER TABLE "replicas" ALTER COLUMN "max_registered" DROP DEFAULT;--> statement-breakpoint
ALTER TABLE "replicas" ADD COLUMN "disk_budget_bytes" bigint DEFAULT 53687091200 NOT NULL;--> statement-breakpoint
ALTER TABLE "replicas" ALTER COLUMN "disk_budget_bytes" DROP DEFAULT;
