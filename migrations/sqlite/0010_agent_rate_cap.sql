-- An Administrator may cap the bytes per second an agent sends on its replication links (null: no cap).
alter table agents add column max_bytes_per_s integer;
