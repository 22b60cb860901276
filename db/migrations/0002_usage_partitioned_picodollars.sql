-- usage_events becomes a table partitioned by month (it has held no data before this migration),
-- keyed by (id, occurred_at) so that a redelivered event conflicts within its own partition.
-- Money moves to integer picodollars: tokens × micro-dollars per million tokens, exactly.
DROP TABLE "usage_events";--> statement-breakpoint
CREATE TABLE "usage_events" (
	"id" text NOT NULL,
	"tenant_id" text NOT NULL,
	"adapter_id" text,
	"adapter_version_id" text,
	"base_model_id" text NOT NULL,
	"replica_id" text,
	"status" text NOT NULL,
	"prompt_tokens" integer NOT NULL,
	"completion_tokens" integer NOT NULL,
	"cached_tokens" integer DEFAULT 0 NOT NULL,
	"cost_picos" bigint NOT NULL,
	"queue_ms" integer,
	"ttft_ms" integer,
	"total_ms" integer,
	"occurred_at" timestamp with time zone NOT NULL,
	"ingested_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "usage_events_id_occurred_at_pk" PRIMARY KEY("id","occurred_at")
) PARTITION BY RANGE ("occurred_at");--> statement-breakpoint
CREATE INDEX "usage_events_tenant_id_idx" ON "usage_events" USING btree ("tenant_id");--> statement-breakpoint
CREATE INDEX "usage_events_tenant_id_occurred_at_idx" ON "usage_events" USING btree ("tenant_id","occurred_at");--> statement-breakpoint
-- Events for a month without a partition land here instead of failing; the ingest worker creates
-- partitions ahead, so this stays empty in normal operation.
CREATE TABLE "usage_events_default" PARTITION OF "usage_events" DEFAULT;--> statement-breakpoint
CREATE OR REPLACE FUNCTION loraplane_ensure_usage_partition(month_start date) RETURNS void AS $$
DECLARE
  name text := 'usage_events_' || to_char(month_start, 'YYYY_MM');
BEGIN
  IF to_regclass(name) IS NULL THEN
    EXECUTE format(
      'CREATE TABLE %I PARTITION OF usage_events FOR VALUES FROM (%L) TO (%L)',
      name, month_start, (month_start + interval '1 month')::date
    );
  END IF;
END
$$ LANGUAGE plpgsql;--> statement-breakpoint
SELECT loraplane_ensure_usage_partition(date_trunc('month', now())::date);--> statement-breakpoint
SELECT loraplane_ensure_usage_partition((date_trunc('month', now()) + interval '1 month')::date);--> statement-breakpoint
ALTER TABLE "usage_rollups" DROP COLUMN "cost_micros";--> statement-breakpoint
ALTER TABLE "usage_rollups" ADD COLUMN "cost_picos" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "usage_rollups" ALTER COLUMN "cost_picos" DROP DEFAULT;
