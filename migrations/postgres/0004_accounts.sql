-- Local accounts, browser sessions, personal API tokens and the audit log (PostgreSQL; see sqlite/0004). Secrets
-- are stored only as hashes.
create table users (
    id            bigint generated always as identity primary key,
    name          text   not null,
    role          text   not null check (role in ('reader', 'operator', 'drill-operator', 'administrator')),
    password_hash text   not null,
    created_at    bigint not null,
    constraint users_name unique (name)
);

create table sessions (
    token_hash text   primary key,
    user_id    bigint not null references users (id) on delete cascade,
    created_at bigint not null,
    expires_at bigint not null
);

create table api_tokens (
    token_hash   text   primary key,
    user_id      bigint not null references users (id) on delete cascade,
    label        text   not null,
    created_at   bigint not null,
    last_used_at bigint
);

-- Who did what, when and why; refused attempts are recorded too.
create table audit (
    id        bigint generated always as identity primary key,
    at        bigint not null,
    user_name text   not null,
    role      text   not null,
    action    text   not null,
    target    text   not null,
    reason    text,
    job_id    text,
    outcome   text   not null,
    detail    text
);
create index audit_by_time on audit (at desc);
