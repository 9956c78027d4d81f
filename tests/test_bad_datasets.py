"""Manifests that were edited or damaged: a message naming the file, never a path outside the dataset."""

import json

import pytest

from blip.cli import main
from blip.data.shards import DatasetWriter, read_manifest
from tests.support import jpeg


@pytest.fixture()
def dataset(tmp_path):
    writer = DatasetWriter(tmp_path / "data", 2)
    for i in range(3):
        writer.write(f"{i:04d}", jpeg(), f"caption {i}", {"source": "web"})
    writer.finish({"by_source": {"web": 3}})
    return tmp_path / "data"


@pytest.mark.parametrize("name", ["../../elsewhere.tar", "/etc/passwd", "sub/dir.tar", "..", "a\\\\b.tar", "", 7])
def test_a_shard_name_leading_outside_the_folder_is_refused(dataset, name):
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["shards"][0]["name"] = name
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="manifest.json: file name .* would lead outside the dataset folder"):
        read_manifest(dataset)


def test_a_damaged_manifest_is_named(dataset, capsys):
    (dataset / "manifest.json").write_bytes(b"{\"format\": \xff")
    assert main(["verify", str(dataset)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json: not a readable manifest" in err and "Traceback" not in err
    (dataset / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="format 'list'"):
        read_manifest(dataset)
