"""Storage root: paths stay inside, writes are atomic, trees copy in."""

from __future__ import annotations

import pytest

from raymlp.errors import StorageError, ValidationError
from raymlp.storage import Storage


def test_paths_and_uris_are_under_the_root(tmp_path):
    st = Storage(str(tmp_path / "root"))
    assert st.uri("features", "customer_profile") == str(tmp_path / "root/features/customer_profile")
    assert st.path("a/b", "c") == str(tmp_path / "root/a/b/c")
    assert st.delta_storage_options() is None


@pytest.mark.parametrize("bad", ["../escape", "a/../../b", "/etc/passwd", "s3://other/bucket"])
def test_nothing_escapes_the_root(tmp_path, bad):
    st = Storage(str(tmp_path))
    with pytest.raises(ValidationError) as info:
        st.path(bad)
    assert info.value.field == "path"


def test_write_read_atomic_and_listdir(tmp_path):
    st = Storage(str(tmp_path))
    st.write_bytes("models/churn/1/card.md", b"# card")
    assert st.read_bytes("models/churn/1/card.md") == b"# card"
    st.write_bytes("models/churn/1/card.md", b"# v2")
    assert st.read_bytes("models/churn/1/card.md") == b"# v2"
    assert st.listdir("models/churn/1") == ["card.md"]  # no temp files left behind
    assert st.exists("models", "churn")
    st.delete("models")
    assert not st.exists("models")
    assert st.listdir("nothing-here") == []


def test_read_missing_is_a_storage_error(tmp_path):
    with pytest.raises(StorageError) as info:
        Storage(str(tmp_path)).read_bytes("nope.json")
    assert info.value.uri.endswith("nope.json")


def test_upload_dir_copies_a_tree(tmp_path):
    src = tmp_path / "art"
    (src / "sub").mkdir(parents=True)
    (src / "weights.pt").write_bytes(b"w")
    (src / "sub" / "x.json").write_text("{}")
    st = Storage(str(tmp_path / "root"))
    uri = st.upload_dir(src, "models", "m", "1")
    assert st.read_bytes("models/m/1/weights.pt") == b"w"
    assert st.read_bytes("models/m/1/sub/x.json") == b"{}"
    assert uri == st.uri("models", "m", "1")
    with pytest.raises(ValidationError):
        st.upload_dir(tmp_path / "missing", "models", "m", "2")


def test_file_uri_and_object_store_uris(tmp_path):
    assert Storage(f"file://{tmp_path}").root == str(tmp_path)
    mock = Storage("mock://bucket/prefix")
    assert mock.uri("x").startswith("mock://") and mock.uri("x").endswith("prefix/x")
    assert not mock.is_local
