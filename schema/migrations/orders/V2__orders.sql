-- Owned by the order service (actors/src/orders). Nothing else writes here.
create table orders.orders (
    order_id        uuid        primary key,
    user_id         uuid        not null,
    status          text        not null check (status in
                    ('awaiting_payment', 'paid', 'shipped', 'delivered', 'cancelled', 'expired')),
    currency        text        not null check (currency ~ '^[a-z]{3}$'),
    total           bigint      not null check (total >= 0),
    expires_at      timestamptz not null,
    payment_id      uuid,
    -- Saga progress: the step's state is written before the step acts, and
    -- cleared after, so a restarted actor knows what it still has to do.
    stock_settled   boolean     not null default false,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create index orders_user_idx on orders.orders (user_id, order_id desc);
create index orders_due_idx on orders.orders (expires_at) where status = 'awaiting_payment';
create index orders_unsettled_idx on orders.orders (order_id) where not stock_settled;

-- Lines keep the name and price at order time: later catalog changes or
-- deletions do not change past orders.
create table orders.order_lines (
    order_id   uuid   not null references orders.orders (order_id),
    line_no    int    not null,
    product_id uuid   not null,
    name       text   not null,
    unit_price bigint not null check (unit_price >= 0),
    quantity   int    not null check (quantity between 1 and 1000),
    line_total bigint not null check (line_total >= 0),
    primary key (order_id, line_no)
);

-- Idempotency-Key of POST /orders, per user, kept 24 h.
create table orders.idempotency_keys (
    user_id      uuid        not null,
    key          text        not null,
    request_hash text        not null,
    -- null while the first request is still running
    outcome      jsonb,
    created_at   timestamptz not null default now(),
    primary key (user_id, key)
);
