-- An item's page lists its newest jobs: found by the item, newest first, however many jobs the vault holds.
create index jobs_by_item on jobs (item_id, created_at);
