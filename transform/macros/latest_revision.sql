{#-
    Current state of a raw table: the latest revision per id. The raw layer keeps every
    revision (merge on id, updated_at); which one is current is decided here, by updated_at,
    so the result does not depend on the order in which revisions were loaded.
    last_load_id is the newest load that touched the id: the incremental watermark.
    DuckDB filters the window with QUALIFY. PostgreSQL has no QUALIFY: it keeps the first row per
    id with DISTINCT ON, which its planner estimates from the statistics of id (a filter on
    row_number() = 1 is estimated at 0.5% of the rows, and the joins downstream of four such
    views became nested loops: 80 s instead of 1 s for January). Other engines filter a subquery
    (the extra _revision_rank column is dropped by the staging models' explicit select lists).
-#}
{% macro latest_revision(relation, order_by='updated_at desc') %}
    {{ return(adapter.dispatch('latest_revision', 'quartet')(relation, order_by)) }}
{% endmacro %}

{% macro default__latest_revision(relation, order_by) %}
    select * from (
        select
            *,
            max(cast(_dlt_load_id as {{ quartet.type_double() }})) over (partition by id)
                as last_load_id,
            row_number() over (partition by id order by {{ order_by }}) as _revision_rank
        from {{ relation }}
    ) as ranked
    where _revision_rank = 1
{% endmacro %}

{% macro postgres__latest_revision(relation, order_by) %}
    select distinct on (id)
        *,
        max(cast(_dlt_load_id as {{ quartet.type_double() }})) over (partition by id) as last_load_id
    from {{ relation }}
    order by id, {{ order_by }}
{% endmacro %}

{% macro duckdb__latest_revision(relation, order_by) %}
    select
        *,
        max(cast(_dlt_load_id as {{ quartet.type_double() }})) over (partition by id) as last_load_id
    from {{ relation }}
    qualify row_number() over (partition by id order by {{ order_by }}) = 1
{% endmacro %}
