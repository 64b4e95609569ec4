-- Site agents (process servers in the cloud, master targets on-premises). An enrollment is a row with the digest of
-- a one-time token; enrolling stores the fingerprint of the certificate the vault's CA signed and forgets the token.
create table agents (
    id                 text primary key,
    name               text not null,
    role               text not null,
    site               text not null,
    created_at         bigint not null,
    created_by         text not null,
    enroll_token_hash  text,
    enroll_expires_at  bigint not null,
    cert_fingerprint   text,
    enrolled_at        bigint,
    last_heartbeat_at  bigint,
    version            text,
    inventory          text,
    revoked_at         bigint,
    constraint agents_name unique (name),
    constraint agents_cert_fingerprint unique (cert_fingerprint)
);
