{#-
    Current state of a raw table: the latest revision per id. The raw layer keeps every
    revision (merge on id, updated_at); which one is current is decided here, by updated_at,
    so the result does not depend on the order in which revisions were loaded.
    last_load_id is the newest load that touched the id: the incremental watermark.
-#}
{% macro latest_revision(relation, order_by='updated_at desc') %}
    select
        *,
        max(_dlt_load_id::double) over (partition by id) as last_load_id
    from {{ relation }}
    qualify row_number() over (partition by id order by {{ order_by }}) = 1
{% endmacro %}
