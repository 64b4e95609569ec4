-- A disabled account signs in by no means (password, session or token) until enabled again; API tokens expire.
alter table users add column disabled_at bigint;
alter table api_tokens add column expires_at bigint;
-- Tokens made before expiry existed get the default lifetime, counted from their creation (90 days).
update api_tokens set expires_at = created_at + 7776000000 where expires_at is null;
