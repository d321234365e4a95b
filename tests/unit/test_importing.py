"""The one import-path resolver."""

from __future__ import annotations

import os.path
import pickle

import pytest

from raymlp._private.importing import IMPORT_PATH_RE, ImportPathError, resolve_import_path


def test_both_spellings_resolve():
    assert resolve_import_path("os.path:join", what="x") is os.path.join
    assert resolve_import_path("os.path.join", what="x") is os.path.join


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("nojoin", "malformed"),
        ("os:", "malformed"),
        (":join", "malformed"),
        ("no_such_module_x:f", "module"),
        ("os.path:no_such_attr", "attribute"),
    ],
)
def test_failures_say_why(path, reason):
    with pytest.raises(ImportPathError) as e:
        resolve_import_path(path, what="udf")
    assert e.value.reason == reason and e.value.import_path == path
    assert str(e.value).startswith(f"udf {path!r} cannot be imported: ")
    assert isinstance(e.value, ImportError)


def test_the_error_pickles():
    with pytest.raises(ImportPathError) as e:
        resolve_import_path("no_such_module_x:f", what="udf")
    again = pickle.loads(pickle.dumps(e.value))
    assert (again.reason, again.detail, str(again)) == (
        e.value.reason,
        e.value.detail,
        str(e.value),
    )


def test_the_format_rule():
    assert IMPORT_PATH_RE.match("raymlp.training.models:tabular_mlp")
    assert not IMPORT_PATH_RE.match("raymlp.training.models.tabular_mlp")
