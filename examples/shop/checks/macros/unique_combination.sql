{#- A generic test: no two rows share the combination of `columns` (a local one: no hub). -#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
