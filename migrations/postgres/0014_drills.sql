-- Test failovers (drills): one row per drill, its id the test failover job's, kept after cleanup as the drill's
-- report (the point used and its age, when the test VM powered on, the checks run, the operator's notes).
create table drills (
    id              text   primary key,
    item_id         text   not null,
    item_name       text   not null,
    vm              text   not null,
    host            text   not null,
    network         text   not null,
    point_id        text   not null,
    point_time      bigint not null,
    point_kind      text   not null,
    disks           text   not null,
    started_at      bigint not null,
    powered_on_at   bigint,
    checks          text   not null default '[]',
    cleaned_at      bigint,
    cleanup_job_id  text,
    notes           text
);

create index drills_by_item on drills (item_id, started_at);
create index drills_by_start on drills (started_at);
