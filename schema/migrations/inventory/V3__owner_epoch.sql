-- Fencing token of the node owning the product's stock actor. An actor takes
-- ownership by incrementing it and writes only while it is unchanged, so an
-- actor on a node that lost ownership (or contact) can no longer write.
alter table inventory.stock add column owner_epoch bigint not null default 0;
