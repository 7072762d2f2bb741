{#-
    What DuckDB and PostgreSQL spell differently, in one place (adapter.dispatch). The models use
    these and dbt's cross-database macros (dbt.any_value, ...), so one project runs on both.
-#}

{#- An 8-byte float: DuckDB's DOUBLE, PostgreSQL's double precision (`double` alone is DuckDB's). -#}
{% macro type_double() %}double precision{% endmacro %}

{#-
    round(value, digits) as a double, rounding half away from zero on the value's decimal form,
    the same way on both engines: PostgreSQL rounds only numeric (its round(double) has no
    digits argument), and its float -> numeric cast keeps 15 significant digits; DuckDB goes
    through a decimal with 12 decimals. Ties (a 5 in the first dropped digit) round alike.
-#}
{% macro round_to(value, digits) %}
    {{ return(adapter.dispatch('round_to', 'quartet')(value, digits)) }}
{% endmacro %}

{% macro default__round_to(value, digits) -%}
    cast(round(cast({{ value }} as numeric), {{ digits }}) as {{ quartet.type_double() }})
{%- endmacro %}

{% macro duckdb__round_to(value, digits) -%}
    cast(round(cast({{ value }} as decimal(38, 12)), {{ digits }}) as {{ quartet.type_double() }})
{%- endmacro %}

{#- numerator / denominator as a float share rounded to `digits`; null when the denominator is 0
    (PostgreSQL divides integers as integers, so the numerator is cast first). -#}
{% macro share(numerator, denominator, digits=4) -%}
    {{ quartet.round_to(
        "cast(" ~ numerator ~ " as " ~ quartet.type_double() ~ ") / nullif(" ~ denominator ~ ", 0)",
        digits) }}
{%- endmacro %}
