-- Fallback upstreams (an OpenAI-compatible API serving a tenant's or a base's requests when no
-- replica can in time) and the usage they serve, metered and billed apart from the fleet's.
ALTER TABLE "base_models" ADD COLUMN "fallback" jsonb;--> statement-breakpoint
ALTER TABLE "tenants" ADD COLUMN "fallback" jsonb;--> statement-breakpoint
ALTER TABLE "usage_events" ADD COLUMN "served_by" text DEFAULT 'fleet' NOT NULL;--> statement-breakpoint
ALTER TABLE "usage_rollups" ADD COLUMN "served_by" text DEFAULT 'fleet' NOT NULL;--> statement-breakpoint
ALTER TABLE "usage_rollups" DROP CONSTRAINT "usage_rollups_tenant_id_bucket_start_base_model_id_adapter_id_pk";--> statement-breakpoint
ALTER TABLE "usage_rollups" ADD CONSTRAINT "usage_rollups_pk" PRIMARY KEY("tenant_id","bucket_start","base_model_id","adapter_id","served_by");--> statement-breakpoint
ALTER TABLE "usage_events" ADD CONSTRAINT "usage_events_served_by_check" CHECK (served_by in ('fleet', 'fallback'));--> statement-breakpoint
ALTER TABLE "usage_rollups" ADD CONSTRAINT "usage_rollups_served_by_check" CHECK (served_by in ('fleet', 'fallback'));
