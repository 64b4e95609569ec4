-- Jobs and their tasks. Every transition is a compare-and-set on (id, epoch) or on the lease's fencing token, so a
-- worker that lost its lease can change nothing. Plain SQL that SQLite and PostgreSQL both accept.
create table jobs (
    id                 text    primary key,
    kind               text    not null,
    item_id            text,
    plan_id            text,
    state              text    not null check (state in
                         ('not-started', 'in-progress', 'succeeded', 'failed', 'cancelled', 'suspended')),
    epoch              bigint  not null default 0,
    lease_owner        text,
    lease_expires_at   bigint,
    fencing_token      bigint  not null default 0,
    idempotency_key    text    not null,
    request            text    not null,
    error              text,
    recommended_action text,
    cancel_requested   integer not null default 0,
    created_at         bigint  not null,
    started_at         bigint,
    finished_at        bigint,
    constraint jobs_idempotency_key unique (idempotency_key)
);

-- At most one active job per replicated item (R-W5).
create unique index jobs_one_active_per_item on jobs (item_id)
    where item_id is not null and state in ('not-started', 'in-progress', 'suspended');

create index jobs_by_state on jobs (state, lease_expires_at);

create table tasks (
    job_id             text    not null references jobs (id),
    seq                integer not null,
    name               text    not null,
    state              text    not null check (state in
                         ('not-started', 'in-progress', 'succeeded', 'failed', 'cancelled', 'suspended')),
    attempts           integer not null default 0,
    started_at         bigint,
    finished_at        bigint,
    bytes              bigint  not null default 0,
    result             text,
    error              text,
    recommended_action text,
    primary key (job_id, seq)
);
