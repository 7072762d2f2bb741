-- Current state of each flight: its latest published revision.
-- _dlt_load_id is the newest load that touched any revision of the flight: the incremental
-- watermark of fct_flights (left out of warehouse fingerprints, see ADR 0005).
with source as (

    select * from {{ source('raw', 'flights') }}

),

latest as (

    {{ latest_revision('source', order_by='updated_at desc, revision desc') }}

),

renamed as (

    select
        id as flight_id,
        revision,
        updated_at,
        make_date(year::int, month::int, day::int) as flight_date,
        year,
        month,
        day,
        carrier as carrier_code,
        flight as flight_number,
        tailnum,
        origin,
        dest,
        sched_dep_time,
        dep_time,
        dep_delay,
        sched_arr_time,
        arr_time,
        arr_delay,
        air_time,
        distance,
        time_hour,
        last_load_id as _dlt_load_id
    from latest

)

select * from renamed
