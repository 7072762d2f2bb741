select tailnum, year_built, plane_type, manufacturer, model, engines, seats, engine
from {{ ref('stg_planes') }}
