-- one row per order: its lines summed, and the store's tax on them
select o.order_id, o.customer_id, o.store_id, o.ordered_on,
    count(i.order_item_id) as items,
    sum(i.amount_cents) as subtotal_cents,
    cast(round(sum(i.amount_cents) * s.tax_rate) as integer) as tax_cents
from {{ ref('stg_orders') }} as o
join {{ ref('order_items') }} as i on i.order_id = o.order_id
join {{ ref('stg_stores') }} as s on s.store_id = o.store_id
group by o.order_id, o.customer_id, o.store_id, o.ordered_on, s.tax_rate
