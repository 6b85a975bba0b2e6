"""The converter's tests need torch and the rest of the ``convert`` extra: without them this folder is skipped
(the runtime's tests in ``tests/runtime`` still run)."""
import pytest

pytest.importorskip("torch", reason="the converter tests need the convert extra (pip install '.[convert]')")
