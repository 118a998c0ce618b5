"""Every accepted source is decoded by the reader, and nothing else decodes."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_inference import png_bytes, synthetic_breast

from mammo_utils.inference import sources
from mammo_utils.inference.sources import load_source, upload_content
from mammo_utils.reader import ImageReadError, read_image


@pytest.fixture()
def reader_calls(monkeypatch):
    """Each call sources makes to the reader, as ``(source type, name)``."""
    calls = []

    def spy(source, *, name=None):
        calls.append((type(source).__name__, name))
        return read_image(source, name=name)

    monkeypatch.setattr(sources, "read_image", spy)
    return calls


def test_every_kind_of_source_goes_through_the_reader_once(reader_calls, breast_png):
    data = breast_png.read_bytes()
    image, _ = read_image(breast_png)
    upload = ({"name": breast_png.name, "type": "image/png", "size": len(data),
               "content": memoryview(data), "last_modified": 0},)
    results = {
        "path": load_source(breast_png),
        "str": load_source(str(breast_png)),
        "bytes": load_source(data, name=breast_png.name),
        "bytearray": load_source(bytearray(data)),
        "upload": load_source(upload),
        "one upload": load_source(upload[0]),
        "array": load_source(image),
    }
    assert reader_calls == [
        ("PosixPath", None), ("str", None), ("bytes", breast_png.name),
        ("bytearray", "upload"), ("bytes", breast_png.name), ("bytes", breast_png.name),
        ("ndarray", "array"),
    ]
    for kind, (decoded, _, _) in results.items():
        np.testing.assert_array_equal(decoded, image, err_msg=kind)
    assert [label for _, _, label in results.values()] == [
        str(breast_png), str(breast_png), breast_png.name, "upload", breast_png.name,
        breast_png.name, "array",
    ]
    assert results["upload"][1]["view"] == "CC" and results["array"][1]["format"] == "array"


def test_an_array_is_normalised_by_the_reader(reader_calls):
    image, _ = synthetic_breast()
    decoded, metadata, label = load_source((image * 65535).astype(np.uint16), name="scan.png")
    np.testing.assert_allclose(decoded, image, atol=1 / 65535)
    assert reader_calls == [("ndarray", "scan.png")] and label == "scan.png"
    colour = np.dstack([image, image * 0.5, image * 0.25])
    _, metadata, _ = load_source(colour)
    assert any("converted to grayscale" in note for note in metadata["warnings"])


def test_bad_sources_are_named_in_the_error():
    with pytest.raises(ImageReadError, match="black.png"):
        load_source(np.full((8, 8), np.inf), name="black.png")
    with pytest.raises(ImageReadError, match="broken.dcm"):
        load_source(b"not an image", name="broken.dcm")
    with pytest.raises(ValueError, match="no file was uploaded"):
        load_source(())
    with pytest.raises(ValueError, match="one file at a time"):
        load_source([{"name": "a.png", "content": b"1"}, {"name": "b.png", "content": b"2"}])
    with pytest.raises(ValueError, match="no 'content'"):
        upload_content({"name": "a.png"})
    with pytest.raises(ValueError, match="cannot classify a int"):
        load_source(42)
    assert upload_content({"content": png_bytes(np.zeros((4, 4)))})[1] == "upload"
