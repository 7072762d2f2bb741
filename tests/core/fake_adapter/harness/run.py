from core.kit import RunFailed, RunRequest
from tests.core.fake_adapter import CALLS


def run(request: RunRequest) -> None:
    CALLS.append(("run", request))
    if request.as_of == "2013-02-28":
        raise RunFailed("ingest flights: the source API refused the token")
