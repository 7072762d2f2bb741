-- every customer with what they ordered; last_order_id points back into orders
select c.customer_id, c.customer_name,
    count(o.order_id) as orders,
    coalesce(sum(o.subtotal_cents + o.tax_cents), 0) as lifetime_value_cents,
    max(o.order_id) as last_order_id
from {{ ref('stg_customers') }} as c
left join {{ ref('orders') }} as o on o.customer_id = c.customer_id
group by c.customer_id, c.customer_name
