-- Every node's catalog cache asks for what changed since its last look,
-- four times a second: an index makes that a short range scan.
create index products_updated_idx on products.products (updated_at);
