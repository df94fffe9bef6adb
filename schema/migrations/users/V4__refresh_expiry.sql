-- Expired refresh tokens are swept (actors/src/users/sweeper.rs): once past
-- expires_at a row can neither refresh nor reveal a reuse worth acting on.
create index refresh_tokens_expires_idx on users.refresh_tokens (expires_at);
