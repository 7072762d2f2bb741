{#- Schemas are named as configured (shop_staging, shop_marts), not <target>_<custom>. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name | trim if custom_schema_name is not none else target.schema }}
{%- endmacro %}
