with source as (

    select * from {{ source('raw', 'airports') }}

),

latest as (

    {{ latest_revision('source') }}

),

renamed as (

    select
        faa as airport_code,
        name as airport_name,
        lat,
        lon,
        alt,
        tz,
        dst,
        tzone,
        last_load_id as _dlt_load_id
    from latest

)

select * from renamed
