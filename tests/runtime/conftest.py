"""Runtime tests: the fake backends of test_pipeline answer when the coordinator waits for events (no sleeps)."""
import pytest


@pytest.fixture(autouse=True)
def release_scripted_backends(monkeypatch):
    """Before a coordinator waits for completions, every ScriptedBackend answers what it was sent this round."""
    from edge_runtime.running.coordinator import Coordinator
    from tests.runtime.test_pipeline import SCRIPTED

    original = Coordinator._wait_and_handle

    def wait_and_handle(self, timeout_s):
        for backend in list(SCRIPTED):
            backend.flush()
        return original(self, timeout_s)

    monkeypatch.setattr(Coordinator, "_wait_and_handle", wait_and_handle)
