select carrier_code, carrier_name
from {{ ref('stg_airlines') }}
