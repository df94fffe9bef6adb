-- Owned by the inventory service (actors/src/inventory): one row per product,
-- written only by that product's stock actor. The CHECKs are the second line of
-- defence against overselling; the actor is the first.
create table inventory.stock (
    product_id          uuid        primary key,
    on_hand             bigint      not null check (on_hand >= 0),
    reserved            bigint      not null default 0 check (reserved >= 0),
    low_stock_threshold bigint      not null default 5 check (low_stock_threshold >= 0),
    archived            boolean     not null default false,
    updated_at          timestamptz not null default now(),
    check (reserved <= on_hand)
);

-- One row per (order, product): a reservation line and what became of it.
-- Kept after release or commit, so a retried reserve/commit/release is answered
-- the same way (idempotent by order id).
create table inventory.reservation_lines (
    order_id   uuid        not null,
    product_id uuid        not null references inventory.stock (product_id),
    quantity   bigint      not null check (quantity > 0),
    status     text        not null check (status in ('reserved', 'committed', 'released')),
    expires_at timestamptz not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (order_id, product_id)
);
create index reservation_lines_due_idx on inventory.reservation_lines (expires_at) where status = 'reserved';
create index reservation_lines_product_idx on inventory.reservation_lines (product_id) where status = 'reserved';

-- Events from other services already applied here (deduplication of redeliveries).
create table inventory.processed_events (
    event_id     uuid        primary key,
    processed_at timestamptz not null default now()
);
