select cast(id as integer) as customer_id, name as customer_name, email
from {{ source('ecom', 'customers') }}
