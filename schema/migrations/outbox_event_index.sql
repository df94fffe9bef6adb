-- No unique index on an outbox's event ids ({schema}). Every append makes
-- fresh ids (UUID v7), and nothing looks an event up by id in the outbox:
-- subscribers and Kafka consumers deduplicate by id on their side. The index
-- cost every event an index insertion and its WAL record.
alter table {schema}.outbox drop constraint if exists outbox_event_id_key;
