with flights as (

    select * from {{ ref('fct_flights') }}

),

final as (

    select
        origin || '-' || dest as route,
        origin,
        {{ dbt.any_value('origin_name') }} as origin_name,
        dest,
        {{ dbt.any_value('dest_name') }} as dest_name,
        count(*) as flights,
        count(distinct carrier_code) as carriers,
        max(distance) as distance,
        {{ round_to('avg(air_time)', 2) }} as avg_air_time,
        {{ round_to('avg(arr_delay)', 2) }} as avg_arr_delay,
        {{ on_time_share() }} as on_time_share
    from flights
    group by origin, dest

)

select * from final
