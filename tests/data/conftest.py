import warnings

import pytest

from diffkit.data import DataError, DataWarning


@pytest.fixture
def data_error():
    """Call ``build`` expecting a one-line DataError that names each of ``names``; return the message."""

    def check(build, *names: str) -> str:
        with pytest.raises(DataError) as info:
            build()
        message = str(info.value)
        assert "\n" not in message, message
        for name in names:
            assert name in message, message
        return message

    return check


@pytest.fixture
def skip_warning():
    """Call ``build`` expecting exactly one DataWarning; return ``(result, message)``."""

    def check(build):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = build()
        ours = [w for w in caught if issubclass(w.category, DataWarning)]
        assert len(ours) == 1, [str(w.message) for w in caught]
        message = str(ours[0].message)
        assert "\n" not in message, message
        return result, message

    return check
