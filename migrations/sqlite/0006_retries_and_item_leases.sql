-- Many workers on several nodes.
--
-- A task that failed in a way worth retrying goes back to 'not-started' with its error kept and the time of its
-- next attempt (database time, ms); its job keeps 'in-progress' with no lease owner and a lease that "expires" at
-- that time, so any worker claims it then.
alter table tasks add column next_attempt_at bigint;

-- Who may write an item's disks now: the job acting on it (holder = the job's id; no time limit, it holds while the
-- job is active) or one replication round (holder = 'replication/<worker>', until expires_at unless renewed). A
-- round takes it only while the item has no active job; a job takes it from an expired round, and a running round
-- gives it up at its next heartbeat when a job wants the item.
create table item_leases (
    item_id    text   primary key,
    holder     text   not null,
    token      bigint not null default 0,
    expires_at bigint not null
);
