-- The estate's description — the inventory, the replicated items with their lifecycle state, the recovery plans,
-- the replication policy and the fault knobs — lives here, changed in transactions that every node sees. The
-- disks themselves stay files under the estate folder. (An estate.json left by an earlier version is imported at
-- the first start.)
create table estate_settings (
    id          integer primary key check (id = 1),
    inventory   text   not null,
    faults      text   not null,
    replication text   not null,
    -- Bumped by every change: readers that cache the estate (the items table of the portal) compare it.
    version     bigint not null default 0
);

-- One row per replicated item: its state and health as columns (filtered on), the rest of its record as JSON.
create table estate_items (
    id       text   primary key,
    position bigint not null,
    state    text   not null,
    health   text   not null,
    record   text   not null
);
create index estate_items_by_state on estate_items (state, health);

create table recovery_plans (
    id       text   primary key,
    position bigint not null,
    name     text   not null,
    -- The ordered groups of item ids, as JSON.
    groups   text   not null
);
