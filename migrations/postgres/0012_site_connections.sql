-- The real APIs of the two sites: a vCenter (primary) or a storage account's container (recovery). The credential is
-- sealed with the data dir's connections key (ChaCha20-Poly1305, the row's id as associated data) and is never
-- returned; `inventory` is what the last successful check read, `last_error` what the last failed one reported.
create table site_connections (
    id              text primary key,
    kind            text not null,
    name            text not null,
    url             text not null,
    user_name       text,
    container       text,
    credential_kind text not null,
    secret_sealed   text not null,
    thumbprint      text,
    created_at      bigint not null,
    created_by      text not null,
    checked_at      bigint not null,
    last_ok_at      bigint,
    last_error      text,
    inventory       text,
    constraint site_connections_name unique (name)
);
