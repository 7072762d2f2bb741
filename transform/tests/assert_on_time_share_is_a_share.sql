-- on_time_share is a share: between 0 and 1 wherever it is defined.
select carrier_month, on_time_share
from {{ ref('carrier_month_performance') }}
where on_time_share < 0 or on_time_share > 1
