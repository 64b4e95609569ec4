-- The Recovery Services vault this Homeward instance is. Exactly one row (id = 1); later migrations hang sites,
-- replicated items, recovery plans and jobs off it. Plain SQL that SQLite and PostgreSQL both accept.
create table vault (
    id         integer primary key check (id = 1),
    name       text    not null check (length(name) between 1 and 80),
    created_at text    not null
);
