with source as (

    select * from {{ source('raw', 'weather') }}

),

latest as (

    {{ latest_revision('source') }}

),

renamed as (

    select
        id as weather_id,
        origin,
        time_hour,
        temp,
        dewp,
        humid,
        wind_dir,
        wind_speed,
        wind_gust,
        precip,
        pressure,
        visib,
        last_load_id as _dlt_load_id
    from latest

)

select * from renamed
