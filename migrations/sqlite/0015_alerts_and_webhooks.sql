-- Alerts: conditions that need a person, apart from job failures (an RPO past its threshold, a site connection or
-- agent that stopped answering, a datastore nearly full). One open alert per kind and subject: it resolves itself
-- when the condition clears, and a person may acknowledge it meanwhile.
create table alerts (
    id              text   primary key,
    kind            text   not null,
    subject         text   not null,
    severity        text   not null,
    message         text   not null,
    started_at      bigint not null,
    last_seen_at    bigint not null,
    resolved_at     bigint,
    acknowledged_at bigint,
    acknowledged_by text
);
create unique index alerts_one_open on alerts (kind, subject) where resolved_at is null;
create index alerts_by_start on alerts (started_at);

-- Webhooks: where alerts and job ends are POSTed, signed with HMAC-SHA256 under the webhook's secret, which is
-- sealed like the site connections' credentials (the row's id as associated data).
create table webhooks (
    id            text   primary key,
    url           text   not null,
    secret_sealed text   not null,
    events        text   not null,
    created_at    bigint not null,
    created_by    text   not null
);

-- Each event for each webhook, written in the transaction that made the event: retried with doubling backoff until
-- delivered or out of attempts, and kept as the delivery log.
create table webhook_deliveries (
    id              text    primary key,
    webhook_id      text    not null,
    event           text    not null,
    payload         text    not null,
    state           text    not null check (state in ('pending', 'delivered', 'failed')),
    attempts        integer not null default 0,
    next_attempt_at bigint  not null,
    last_status     integer,
    last_error      text,
    created_at      bigint  not null,
    delivered_at    bigint
);
create index webhook_deliveries_due on webhook_deliveries (state, next_attempt_at);
create index webhook_deliveries_by_hook on webhook_deliveries (webhook_id, created_at);
