-- The trace of the request that wrote each event (a W3C traceparent, when
-- traces were on), so subscribers and the Kafka bridge continue it. Applied
-- to every service's outbox ({schema}), as the outbox itself is.
alter table {schema}.outbox add column if not exists traceparent text;
