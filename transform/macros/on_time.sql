{#-
    On time, defined once, for every mart. A flight is on time when it arrived no more than
    var('on_time_threshold_minutes') late (15: the US DOT rule); null when it has no arrival
    delay (cancelled, diverted). The on-time share of a group is over the flights that arrived
    (those with an arrival delay); every mart that shows one uses on_time_share().
-#}
{% macro is_on_time(arr_delay='arr_delay') -%}
    case when {{ arr_delay }} is null then null
        else {{ arr_delay }} <= {{ var('on_time_threshold_minutes') }} end
{%- endmacro %}

{#- Late by the same rule: more than the threshold (used for departures too). -#}
{% macro is_late(delay) -%}
    {{ delay }} > {{ var('on_time_threshold_minutes') }}
{%- endmacro %}

{#- Aggregate: the share of arrived flights that were on time, 4 decimals, null if none arrived. -#}
{% macro on_time_share(is_on_time='is_on_time', arr_delay='arr_delay') -%}
    {{ quartet.share("count(*) filter (where " ~ is_on_time ~ ")", "count(" ~ arr_delay ~ ")", 4) }}
{%- endmacro %}
