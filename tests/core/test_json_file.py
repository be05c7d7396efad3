"""Reading a JSON file a user brings: every way it can fail is one line naming the file, in the caller's error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import colt_core.io as colt_io
from colt_core.errors import UserError
from colt_core.io import JSON_SIZE_LIMIT, CheckpointError, load_json_file, read_json


class AnnotationsError(UserError, ValueError):
    """A caller's own error type."""


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


BROKEN = {
    "invalid": ('{"images": [1, 2,]}', "annotations file is not valid JSON (Expecting value at line 1 column 18)"),
    "truncated": ('{"images": [1, 2', "annotations file is not valid JSON (Expecting ',' delimiter at line 1"),
    "latin1": ('{"name": "café"}'.encode("latin-1"), "annotations file is not UTF-8 text (byte 13: invalid "
                                                      "continuation byte)"),
    "utf16": ('{"a": 1}'.encode("utf-16"), "annotations file is not UTF-8 text (byte 0"),
    "gzip": (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", "annotations file is not UTF-8 text (byte 1"),
    "nested_100k": ("[" * 100_000 + "]" * 100_000, "annotations file nests its lists or objects too deeply"),
    "long_integer": ('{"id": ' + "7" * 5000 + "}", "annotations file is not readable JSON (Exceeds the limit "
                                                   "(4300 digits) for integer string conversion"),
    "empty": ("", "annotations file is not valid JSON (Expecting value at line 1 column 1)"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_file_is_one_line_naming_it_in_the_callers_error(tmp_path: Path, case: str):
    content, fragment = BROKEN[case]
    path = _write(tmp_path / "instances.json", content)
    with pytest.raises(AnnotationsError) as info:
        load_json_file(path, what="annotations file", fix="pass a COCO instances file", error=AnnotationsError)
    message = str(info.value)
    assert message.startswith(f"{path}: {fragment}"), message
    assert message.endswith("; pass a COCO instances file") and "\n" not in message


def test_missing_paths_folders_and_devices_are_named(tmp_path: Path):
    cases = {tmp_path / "nowhere.json": "results file not found", tmp_path: "results file is not a regular file",
             Path("/dev/null"): "results file is not a regular file"}
    for path, fragment in cases.items():
        with pytest.raises(CheckpointError, match="^" + str(path) + ": " + fragment + "$"):
            load_json_file(path, what="results file")


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "huge.json"
    with path.open("wb") as handle:
        handle.truncate(JSON_SIZE_LIMIT + 1)  # sparse: no disk used
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"{self} was read"))
    with pytest.raises(CheckpointError) as info:
        load_json_file(path, what="results file")
    assert str(info.value) == f"{path}: results file is 8.0 GiB, more than the 8.0 GiB a JSON file read here may hold"
    small = _write(tmp_path / "small.json", "[1, 2, 3]")
    with pytest.raises(CheckpointError, match=r"small.json: results file is 9 bytes, more than the 8 bytes"):
        load_json_file(small, what="results file", max_bytes=8)


def test_running_out_of_memory_while_parsing_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = _write(tmp_path / "instances.json", json.dumps({"images": list(range(1000))}))

    def no_memory(text: str) -> None:
        raise MemoryError

    monkeypatch.setattr(colt_io.json, "loads", no_memory)
    with pytest.raises(AnnotationsError) as info:
        load_json_file(path, what="annotations file", error=AnnotationsError)
    assert str(info.value) == f"{path}: annotations file (4.8 KiB) does not fit in memory once parsed"


def test_good_files_are_parsed_with_or_without_a_byte_order_mark(tmp_path: Path):
    value = {"images": [{"id": 1, "file_name": "é.jpg"}], "score": 0.5}
    plain = _write(tmp_path / "plain.json", json.dumps(value, ensure_ascii=False))
    marked = _write(tmp_path / "marked.json", b"\xef\xbb\xbf" + json.dumps(value).encode("utf-8"))
    assert load_json_file(plain) == value and load_json_file(marked) == value


def test_run_files_are_read_with_the_same_checks(tmp_path: Path) -> None:
    """A run's own JSON files (summary.json, rounds.json) that are damaged say so in one line, deep nesting too."""
    missing = tmp_path / "summary.json"
    with pytest.raises(CheckpointError, match=r"summary\.json: file not found"):
        read_json(missing)
    for text in ("[" * 100_000, b"\xff\xfe{}", '{"a": '):
        path = tmp_path / "rounds.json"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(CheckpointError, match=r"rounds.json: .*; delete it to recompute it"):
            read_json(path)
    path.write_text('{"a": 1}')
    assert read_json(path) == {"a": 1}
