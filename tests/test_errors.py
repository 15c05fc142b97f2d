"""One readable line per failure: the reason behind MONAI's wrapping, and the uncaught-error hook."""

from __future__ import annotations

import pytest

from fewlabel.errors import VERBOSE_ENV, DataError, _hook, failure_reason


def _wrapped(inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except Exception as e:
            raise RuntimeError("applying transform <LoadImage2Dd>") from e
    except RuntimeError as outer:
        return outer


def test_the_reason_is_our_message_behind_monai_wrapping():
    assert failure_reason(_wrapped(DataError("/d/a.png is truncated: re-export it"))) == \
        "/d/a.png is truncated: re-export it"


def test_a_foreign_error_is_named_by_its_innermost_cause():
    assert failure_reason(_wrapped(ZeroDivisionError("division by zero"))) == "ZeroDivisionError: division by zero"


def test_hook_prints_one_line_and_keeps_the_traceback_in_a_file(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    monkeypatch.setattr("fewlabel.errors._log_path", lambda: tmp_path / "err.log")
    exc = _wrapped(DataError("/d/a.png is truncated"))
    _hook(type(exc), exc, exc.__traceback__, fallback=lambda *a: pytest.fail("fell back"))
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fewlabel: error: /d/a.png is truncated (traceback in {tmp_path / 'err.log'}; "
                   f"{VERBOSE_ENV}=1 prints it)"]
    assert "RuntimeError: applying transform" in (tmp_path / "err.log").read_text()


@pytest.mark.parametrize("verbose, exc", [("1", DataError("x")), ("", KeyError("k"))])
def test_verbose_or_foreign_errors_keep_the_full_traceback(verbose, exc, monkeypatch):
    monkeypatch.setenv(VERBOSE_ENV, verbose)
    seen = []
    _hook(type(exc), exc, None, fallback=lambda *a: seen.append(a[1]))
    assert seen == [exc]
