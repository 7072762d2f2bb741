select airport_code, airport_name, lat, lon, alt, tz, dst, tzone
from {{ ref('stg_airports') }}
