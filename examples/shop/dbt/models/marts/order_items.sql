-- each order line with its product and what it cost
select i.order_item_id, i.order_id, i.sku, p.product_type, i.quantity,
    i.quantity * p.price_cents as amount_cents
from {{ ref('stg_order_items') }} as i
join {{ ref('stg_products') }} as p on p.sku = i.sku
