-- Owned by the notification service (actors/src/notifications).

-- Where to write to, kept from user.registered / user.updated.
create table notifications.recipients (
    user_id    uuid        primary key,
    username   text        not null,
    email      text        not null,
    updated_at timestamptz not null default now()
);

-- The log of every email: one row per (event, template), written before the
-- send and marked after the server accepted it, so a redelivered event never
-- sends twice.
create table notifications.notifications (
    notification_id uuid        primary key,
    event_id        uuid        not null,
    template        text        not null,
    user_id         uuid,
    recipient       text        not null,
    subject         text        not null,
    body_text       text        not null,
    body_html       text        not null,
    status          text        not null default 'pending' check (status in ('pending', 'sent', 'failed')),
    attempts        int         not null default 0,
    last_error      text,
    next_attempt_at timestamptz not null default now(),
    created_at      timestamptz not null default now(),
    sent_at         timestamptz,
    unique (event_id, template)
);
create index notifications_due_idx on notifications.notifications (next_attempt_at) where status = 'pending';
create index notifications_user_idx on notifications.notifications (user_id, notification_id desc);
