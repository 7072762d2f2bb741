with flights as (

    select * from {{ ref('fct_flights') }}

),

final as (

    select
        origin || '-' || dest as route,
        origin,
        any_value(origin_name) as origin_name,
        dest,
        any_value(dest_name) as dest_name,
        count(*) as flights,
        count(distinct carrier_code) as carriers,
        max(distance) as distance,
        round(avg(air_time), 2) as avg_air_time,
        round(avg(arr_delay), 2) as avg_arr_delay,
        round(count(*) filter (where is_on_time) / nullif(count(arr_delay), 0), 4) as on_time_share
    from flights
    group by origin, dest

)

select * from final
