-- Departure delays by the weather at the origin airport in the scheduled hour.
with flights as (

    select * from {{ ref('fct_flights') }}

),

classified as (

    select
        *,
        case
            when visib is null and precip is null and wind_speed is null then 'unknown'
            when visib < 3 then 'low visibility'
            when precip > 0 then 'precipitation'
            when wind_speed >= 25 then 'high wind'
            else 'clear'
        end as weather_condition
    from flights

),

final as (

    select
        origin || '-' || weather_condition as origin_condition,
        origin,
        weather_condition,
        count(*) as flights,
        count(*) filter (where is_cancelled) as cancelled,
        {{ round_to('avg(dep_delay)', 2) }} as avg_dep_delay,
        {{ share('count(*) filter (where ' ~ is_late('dep_delay') ~ ')', 'count(dep_delay)', 4) }}
            as delayed_departure_share
    from classified
    group by origin, weather_condition

)

select * from final
