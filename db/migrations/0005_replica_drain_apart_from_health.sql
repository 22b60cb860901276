-- An operator's drain is kept apart from the replica's health, so that a draining replica that dies
-- is down (its placements dropped, no request routed to it) and is still draining when it returns.
-- Additive: API processes of the previous release still write status 'draining', which this
-- release reads as up and draining until its fleet poller moves the drain into draining_since.
ALTER TABLE "replicas" ADD COLUMN "draining_since" timestamp with time zone;--> statement-breakpoint
UPDATE "replicas" SET "draining_since" = now(), "status" = 'up' WHERE "status" = 'draining';
