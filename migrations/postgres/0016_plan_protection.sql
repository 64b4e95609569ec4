-- A recovery plan's default protection settings (retention, app-consistent frequency, RPO threshold, in minutes;
-- JSON, each absent one the vault's): its reprotect gives them to every item that is not given its own.
alter table recovery_plans add column protection text not null default '{}';
