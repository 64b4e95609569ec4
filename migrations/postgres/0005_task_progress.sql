-- Live progress of a running task (bytes of the disk examined so far, out of the total), written by the worker
-- beside its lease heartbeat.
alter table tasks add column progress_done bigint;
alter table tasks add column progress_total bigint;
