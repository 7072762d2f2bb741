-- Flights with the weather at their origin in their scheduled hour, their plane, carrier and
-- airports. _dlt_load_id is the newest load among all rows a flight is built from: when any of
-- them changes, the flight is rebuilt by the incremental fct_flights.
with flights as (

    select * from {{ ref('stg_flights') }}

),

weather as (

    select * from {{ ref('stg_weather') }}

),

planes as (

    select * from {{ ref('stg_planes') }}

),

airlines as (

    select * from {{ ref('stg_airlines') }}

),

airports as (

    select * from {{ ref('stg_airports') }}

),

joined as (

    select
        flights.flight_id,
        flights.flight_date,
        flights.year,
        flights.month,
        flights.carrier_code,
        airlines.carrier_name,
        flights.flight_number,
        flights.tailnum,
        flights.origin,
        origin_airport.airport_name as origin_name,
        flights.dest,
        dest_airport.airport_name as dest_name,
        flights.sched_dep_time,
        flights.dep_time,
        flights.dep_delay,
        flights.sched_arr_time,
        flights.arr_time,
        flights.arr_delay,
        flights.air_time,
        flights.distance,
        flights.time_hour,
        flights.revision,
        flights.updated_at,
        planes.manufacturer as plane_manufacturer,
        planes.model as plane_model,
        planes.year_built as plane_year_built,
        planes.seats as plane_seats,
        weather.temp,
        weather.wind_speed,
        weather.precip,
        weather.visib,
        greatest(
            flights._dlt_load_id,
            coalesce(weather._dlt_load_id, 0),
            coalesce(planes._dlt_load_id, 0),
            coalesce(airlines._dlt_load_id, 0),
            coalesce(origin_airport._dlt_load_id, 0),
            coalesce(dest_airport._dlt_load_id, 0)
        ) as _dlt_load_id
    from flights
    left join weather
        on flights.origin = weather.origin and flights.time_hour = weather.time_hour
    left join planes on flights.tailnum = planes.tailnum
    left join airlines on flights.carrier_code = airlines.carrier_code
    left join airports as origin_airport on flights.origin = origin_airport.airport_code
    left join airports as dest_airport on flights.dest = dest_airport.airport_code

)

select * from joined
