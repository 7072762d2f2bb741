from core import lineage


def declared_graph() -> lineage.Graph:
    return lineage.Graph(
        nodes={"raw.flights": "raw", "stg_flights": "staging"},
        edges={("raw.flights", "stg_flights")},
    )
