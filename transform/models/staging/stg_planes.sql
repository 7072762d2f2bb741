with source as (

    select * from {{ source('raw', 'planes') }}

),

latest as (

    {{ latest_revision('source') }}

),

renamed as (

    select
        tailnum,
        year as year_built,
        type as plane_type,
        manufacturer,
        model,
        engines,
        seats,
        engine,
        last_load_id as _dlt_load_id
    from latest

)

select * from renamed
