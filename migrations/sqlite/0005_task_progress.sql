-- Live progress of a running task (bytes of the disk examined so far, out of the total), written by the worker
-- beside its lease heartbeat so the job page can show a progress bar while a long sync runs.
alter table tasks add column progress_done integer;
alter table tasks add column progress_total integer;
