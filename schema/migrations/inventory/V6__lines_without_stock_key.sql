-- Reservation lines no longer reference stock by foreign key. Only a product's
-- stock actor writes its lines, and only after loading the product's stock
-- row (a product without one is refused as unknown); stock rows are archived,
-- never deleted. The key's check locked the stock row once per line written
-- (a WAL record and a trigger query each): about a sixth of the server's time
-- for a batch of reservations, guarding against something mart cannot do.
alter table inventory.reservation_lines drop constraint if exists reservation_lines_product_id_fkey;
