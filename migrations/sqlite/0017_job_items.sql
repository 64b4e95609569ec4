-- The items a recovery plan's job works on. While the job is active each of them is busy (R-W5) exactly as if a
-- job of its own ran: no single-item action starts on it and replication rounds leave it to the plan.
create table job_items (
    job_id  text not null references jobs (id),
    item_id text not null,
    primary key (job_id, item_id)
);
create index job_items_by_item on job_items (item_id);

-- Plan jobs recorded before this table: their items are in their tasks' steps (`plan-item-<operation>/<item>`).
insert into job_items (job_id, item_id)
    select distinct job_id, substr(step, instr(step, '/') + 1) from tasks where step like 'plan-item-%/%';
