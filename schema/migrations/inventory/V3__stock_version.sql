-- Version of a product's stock row, incremented by every write of its stock
-- actor. An actor writes only if the row is still at the version it loaded (or
-- last wrote), so an actor on a node that lost ownership — or contact — cannot
-- write over changes it has not seen.
alter table inventory.stock add column version bigint not null default 0;
