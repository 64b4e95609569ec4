-- The estate is read in its items' order: by an index, rather than sorting every item's record on each read
-- (SQLite's sorter spilled thousands of records to temp files for every list of the items).
create index estate_items_in_order on estate_items (position, id);
