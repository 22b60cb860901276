-- Fairness between tenants (additive): per-tenant caps on requests in flight and on cold loads per
-- minute (null: the API's defaults), and a priority that weighs a tenant's share of adapter loads
-- while the fleet is busy (null: 10). Processes of the previous release ignore the columns.
ALTER TABLE "tenants" ADD COLUMN "max_concurrent_requests" integer;--> statement-breakpoint
ALTER TABLE "tenants" ADD COLUMN "cold_loads_per_minute" integer;--> statement-breakpoint
ALTER TABLE "tenants" ADD COLUMN "priority" integer;