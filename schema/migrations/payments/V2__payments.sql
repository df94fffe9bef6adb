-- Owned by the payment service (actors/src/payments). Nothing else writes here.
create table payments.payments (
    payment_id     uuid        primary key,
    order_id       uuid        not null,
    user_id        uuid        not null,
    status         text        not null check (status in ('pending', 'succeeded', 'failed', 'expired', 'refunded')),
    amount         bigint      not null check (amount >= 0),
    currency       text        not null,
    session_id     text        unique,
    checkout_url   text,
    payment_intent text,
    -- Saga progress: the order was told it is paid (or, for a payment that
    -- arrived too late, the money went back).
    order_notified boolean     not null default false,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now()
);
-- At most one live payment per order: two concurrent "pay" clicks share one
-- checkout session, and an order is never charged twice.
create unique index payments_one_live_per_order on payments.payments (order_id)
    where status in ('pending', 'succeeded');
create index payments_pending_idx on payments.payments (created_at) where status = 'pending';

-- Stripe events already handled (webhooks are delivered at least once).
create table payments.stripe_events (
    event_id    text        primary key,
    received_at timestamptz not null default now()
);

create table payments.idempotency_keys (
    user_id      uuid        not null,
    key          text        not null,
    request_hash text        not null,
    outcome      jsonb,
    created_at   timestamptz not null default now(),
    primary key (user_id, key)
);
