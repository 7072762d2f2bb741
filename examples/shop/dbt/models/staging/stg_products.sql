select sku, name as product_name, type as product_type,
    cast(price_cents as integer) as price_cents
from {{ source('ecom', 'products') }}
