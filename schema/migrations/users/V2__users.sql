-- Owned by the user service (actors/src/users). Nothing else writes here.
create table users.users (
    user_id       uuid        primary key,
    username      text        not null check (length(username) between 3 and 32),
    email         text        not null,
    -- argon2id PHC string; never leaves the user service.
    password_hash text        not null,
    role          text        not null check (role in ('customer', 'admin')),
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);
-- Case-insensitive uniqueness: the database, not a lookup before insert, decides
-- who wins when two people register the same name at once.
create unique index users_username_key on users.users (lower(username));
create unique index users_email_key on users.users (lower(email));
