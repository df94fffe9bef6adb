-- The outbox of one service, created in that service's schema ({schema}).
-- Domain events are inserted here in the same transaction as the state change
-- they describe, so the table and the events can never disagree.
--
-- Events are spread over 16 partitions by aggregate id. Within a partition,
-- `seq` is gap-free and in commit order: a writer locks its partition's row in
-- outbox_head right before inserting and keeps it until commit, so a reader
-- that sees seq N of a partition has seen every event below N there.
-- Subscriber cursors rely on this. Partitions let writers of different
-- aggregates commit in parallel; one aggregate's events stay in one partition,
-- in order.
create table {schema}.outbox (
    partition     smallint    not null check (partition between 0 and 15),
    seq           bigint      not null,
    event_id      uuid        not null unique,
    event_type    text        not null,
    aggregate_id  uuid        not null,
    -- Per aggregate, gap-free, starting at 1.
    aggregate_seq bigint      not null,
    data          jsonb       not null,
    occurred_at   timestamptz not null default now(),
    primary key (partition, seq),
    unique (aggregate_id, aggregate_seq)
);

create table {schema}.outbox_head (
    partition smallint primary key check (partition between 0 and 15),
    seq       bigint   not null
);
insert into {schema}.outbox_head (partition, seq) select p, 0 from generate_series(0, 15) as p;

-- Per durable subscriber and partition: everything up to delivered_seq was acknowledged.
create table {schema}.outbox_cursors (
    subscriber    text        not null,
    partition     smallint    not null,
    delivered_seq bigint      not null default 0,
    updated_at    timestamptz not null default now(),
    primary key (subscriber, partition)
);
