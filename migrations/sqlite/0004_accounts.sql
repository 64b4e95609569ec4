-- Local accounts, browser sessions, personal API tokens and the audit log. Secrets are stored only as hashes:
-- passwords as argon2id PHC strings, session and API tokens as BLAKE3 digests of the random token.
create table users (
    id            integer primary key,
    name          text not null unique,
    role          text not null check (role in ('reader', 'operator', 'drill-operator', 'administrator')),
    password_hash text not null,
    created_at    integer not null
);

create table sessions (
    token_hash text primary key,
    user_id    integer not null references users (id) on delete cascade,
    created_at integer not null,
    expires_at integer not null
);

create table api_tokens (
    token_hash   text primary key,
    user_id      integer not null references users (id) on delete cascade,
    label        text not null,
    created_at   integer not null,
    last_used_at integer
);

-- Who did what, when and why; refused attempts are recorded too.
create table audit (
    id        integer primary key autoincrement,
    at        integer not null,
    user_name text not null,
    role      text not null,
    action    text not null,
    target    text not null,
    reason    text,
    job_id    text,
    outcome   text not null,
    detail    text
);
create index audit_by_time on audit (at desc);
