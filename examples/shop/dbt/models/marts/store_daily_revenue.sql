select store_id, ordered_on, count(*) as orders, sum(subtotal_cents + tax_cents) as revenue_cents
from {{ ref('orders') }}
group by store_id, ordered_on
