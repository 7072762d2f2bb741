select cast(id as integer) as order_item_id, cast(order_id as integer) as order_id, sku,
    cast(quantity as integer) as quantity
from {{ source('ecom', 'order_items') }}
