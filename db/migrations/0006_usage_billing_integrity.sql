-- Billing integrity. Token counts become 64-bit (a fallback provider's counts past 2^31 must be stored,
-- not fail their batch); usage_events.request_id keeps the client's x-request-id apart from the event id,
-- which the gateway now generates per request (events stored before this migration have request_id null
-- and their id is the request id); events Postgres refuses go to usage_dead_letters instead of blocking
-- ingestion; monthly partitions are bounded at UTC midnight whatever the session time zone.
-- The column change rewrites usage_events (one pass for the three columns, under an exclusive lock):
-- see docs/operations.md before applying it to a large table.
CREATE TABLE "usage_dead_letters" (
	"id" text PRIMARY KEY NOT NULL,
	"tenant_id" text,
	"event_id" text,
	"source" text NOT NULL,
	"stream_entry_id" text,
	"payload" text NOT NULL,
	"reason" text NOT NULL,
	"sqlstate" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "usage_events"
	ALTER COLUMN "prompt_tokens" SET DATA TYPE bigint,
	ALTER COLUMN "completion_tokens" SET DATA TYPE bigint,
	ALTER COLUMN "cached_tokens" SET DATA TYPE bigint,
	ADD COLUMN "request_id" text;--> statement-breakpoint
CREATE INDEX "usage_dead_letters_created_at_idx" ON "usage_dead_letters" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "usage_events_tenant_id_request_id_idx" ON "usage_events" USING btree ("tenant_id","request_id");--> statement-breakpoint
CREATE OR REPLACE FUNCTION loraplane_ensure_usage_partition(month_start date) RETURNS void AS $$
DECLARE
  name text := 'usage_events_' || to_char(month_start, 'YYYY_MM');
BEGIN
  IF to_regclass(name) IS NULL THEN
    EXECUTE format(
      'CREATE TABLE %I PARTITION OF usage_events FOR VALUES FROM (%L) TO (%L)',
      name,
      to_char(month_start, 'YYYY-MM-DD') || ' 00:00:00+00',
      to_char((month_start + interval '1 month')::date, 'YYYY-MM-DD') || ' 00:00:00+00'
    );
  END IF;
END
$$ LANGUAGE plpgsql;
