-- A job's (or a replication round's) cycle handed to two site agents: the sender reads the source disks and streams
-- them to the receiver, which writes the target disks. The row carries the fence of whoever created it (a job's
-- fencing token, or a round's item lease): once that fence is no longer current, every call of either agent about
-- the assignment is refused and both stop moving bytes.
create table assignments (
    id            text primary key,
    job_id        text,
    fence_kind    text not null,
    fence_key     text not null,
    fence_holder  text not null,
    fence_token   integer not null,
    sender_id     text not null references agents (id),
    receiver_id   text not null references agents (id),
    spec          text not null,
    state         text not null,
    created_at    integer not null,
    taken_at      integer,
    updated_at    integer not null,
    done_bytes    integer not null default 0,
    total_bytes   integer not null default 0,
    wire_bytes    integer not null default 0,
    result        text,
    error         text
);
create index assignments_sender_state on assignments (sender_id, state);
create index assignments_job on assignments (job_id);
