-- A task's step code (what the workflow runs), beside its display name (what the job page shows).
alter table tasks add column step text not null default '';
