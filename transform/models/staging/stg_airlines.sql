with source as (

    select * from {{ source('raw', 'airlines') }}

),

latest as (

    {{ latest_revision('source') }}

),

renamed as (

    select
        carrier as carrier_code,
        name as carrier_name,
        last_load_id as _dlt_load_id
    from latest

)

select * from renamed
