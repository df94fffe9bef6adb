-- The outbox of one service, created in that service's schema ({schema}).
-- Domain events are inserted here in the same transaction as the state change
-- they describe, so the table and the events can never disagree.
create table {schema}.outbox (
    -- Service-wide, gap-free and in commit order: writers take the row lock on
    -- outbox_head before inserting, so a reader that sees seq N has seen every
    -- event below N. Subscriber cursors rely on this.
    seq           bigint      primary key,
    event_id      uuid        not null unique,
    event_type    text        not null,
    aggregate_id  uuid        not null,
    -- Per aggregate, gap-free, starting at 1.
    aggregate_seq bigint      not null,
    data          jsonb       not null,
    occurred_at   timestamptz not null default now(),
    unique (aggregate_id, aggregate_seq)
);

create table {schema}.outbox_head (
    only_row boolean primary key default true check (only_row),
    seq      bigint  not null
);
insert into {schema}.outbox_head (seq) values (0);

-- One row per durable subscriber: everything up to delivered_seq was acknowledged.
create table {schema}.outbox_cursors (
    subscriber    text        primary key,
    delivered_seq bigint      not null default 0,
    updated_at    timestamptz not null default now()
);
