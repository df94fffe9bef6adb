-- Owned by the product service (actors/src/products). Nothing else writes here.
create table products.products (
    product_id  uuid        primary key,
    name        text        not null check (length(btrim(name)) between 1 and 200),
    description text        not null default '' check (length(description) <= 10000),
    -- Minor units of `currency` (1999 = 19.99 USD): integers, never floats.
    price       bigint      not null check (price >= 0),
    currency    text        not null check (currency ~ '^[a-z]{3}$'),
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    -- Deleting archives: orders keep referring to the product.
    archived_at timestamptz,
    search      tsvector generated always as (
                    setweight(to_tsvector('english', name), 'A')
                    || setweight(to_tsvector('english', description), 'B')
                ) stored
);
create index products_search_idx on products.products using gin (search);
-- Keyset pagination for each sort order; only live products are listed.
create index products_created_idx on products.products (created_at desc, product_id desc) where archived_at is null;
create index products_price_idx on products.products (price, product_id) where archived_at is null;
create index products_name_idx on products.products (name, product_id) where archived_at is null;
