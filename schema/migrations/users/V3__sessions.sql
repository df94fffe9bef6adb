-- Revocation floors. An access token names its user's token version (`ver`)
-- and its session (`sid`); a row here raises the floor for a subject (a user
-- or a session), and every edge refuses tokens below it. A password or role
-- change or a delete raises the user's floor; a logout or a reused refresh
-- token revokes the session. Rows older than the longest access-token life
-- concern no live token.
create table users.revocations (
    subject    uuid        primary key,
    version    integer     not null,
    changed_at timestamptz not null default clock_timestamp()
);
create index revocations_changed_idx on users.revocations (changed_at);

-- Refresh tokens (RFC 6749 §6), kept as the SHA-256 of the secret. Each use
-- rotates the token; a rotated token used again revokes its whole family
-- (the session), since one of its two holders is not its owner.
create table users.refresh_tokens (
    token_hash bytea       primary key,
    family     uuid        not null,
    user_id    uuid        not null,
    expires_at timestamptz not null,
    used_at    timestamptz,
    created_at timestamptz not null default now()
);
create index refresh_tokens_family_idx on users.refresh_tokens (family);
create index refresh_tokens_user_idx on users.refresh_tokens (user_id);
