-- On-time performance per carrier and month. on_time_share is over flights that arrived
-- (those with an arrival delay; macros/on_time.sql); cancelled and diverted flights are counted apart.
with flights as (

    select * from {{ ref('fct_flights') }}

),

aggregated as (

    select
        carrier_code,
        {{ dbt.any_value('carrier_name') }} as carrier_name,
        year,
        month,
        count(*) as flights,
        count(*) filter (where is_cancelled) as cancelled,
        count(arr_delay) as arrived,
        count(*) filter (where is_on_time) as on_time,
        {{ on_time_share() }} as on_time_share,
        {{ round_to('avg(arr_delay)', 2) }} as avg_arr_delay
    from flights
    group by carrier_code, year, month

),

final as (

    select
        carrier_code || '-' || year || '-' || lpad(month::varchar, 2, '0') as carrier_month,
        carrier_code,
        carrier_name,
        year,
        month,
        flights,
        cancelled,
        arrived,
        on_time,
        on_time_share,
        avg_arr_delay
    from aggregated

)

select * from final
