"""Fuzzing the detection loaders: near-valid COCO instances files, VOC annotation XML and image sets, COCO results
files and VOC results files, read by the loaders and by `colt eval`, are accepted or refused with a UserError (an
`Error:` line and exit status 1 from the command), never another exception.

The images are real JPEGs, written once per module; each input is written to a scratch folder as a real file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from colt_core.errors import UserError
from colt_det.coco import CocoCategories, load_coco
from colt_det.coco_eval import evaluate_coco_results
from colt_det.commands import eval_command
from colt_det.data import DetectionDataError
from colt_det.voc import load_voc_records
from colt_det.voc_eval import RESULTS_PREFIX
from tests.fuzzing import FUZZ, accepted_or_refused, corrupted, json_file, json_text, mutated, scratch_dir

W, H = 32, 24


def _write_jpegs(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(folder / name, quality=90)
    return folder


# ----- COCO instances files ------------------------------------------------------------------------------
INSTANCES = {
    "info": {"description": "fuzz"},
    "images": [{"id": 1, "file_name": "a.jpg", "width": W, "height": H},
               {"id": 2, "file_name": "b.jpg", "width": W, "height": H},
               {"id": 3, "file_name": "c.jpg", "width": W, "height": H}],  # no annotations
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8], "area": 80, "iscrowd": 0},
                    {"id": 2, "image_id": 1, "category_id": 2, "bbox": [20.5, 4.25, 11.5, 19.75], "iscrowd": 0},
                    {"id": 3, "image_id": 2, "category_id": 2, "bbox": [0, 0, 32, 24], "iscrowd": 1}],
    "categories": [{"id": 1, "name": "cat", "supercategory": "animal"}, {"id": 2, "name": "dog"}],
}
COCO_IMAGES = _write_jpegs(scratch_dir("coco-images"), ["a.jpg", "b.jpg", "c.jpg"])
CATEGORIES = CocoCategories(ids=(1, 2), names=("cat", "dog"))


@FUZZ
@given(instances=json_file(INSTANCES), mode=st.sampled_from(["error", "skip"]), keep_empty=st.booleans(),
       expected=st.sampled_from([None, CATEGORIES]))
def test_fuzz_coco_instances(instances: bytes, mode: str, keep_empty: bool, expected: CocoCategories | None) -> None:
    path = scratch_dir("coco") / "instances.json"
    path.write_bytes(instances)
    accepted_or_refused("COCO instances", lambda: load_coco([(COCO_IMAGES, path)], on_bad_annotation=mode,
                                                            keep_empty=keep_empty, categories=expected))


# ----- VOC annotations and image sets ----------------------------------------------------------------------
def _annotation(image_id: str, objects: list[tuple[str, tuple[int, int, int, int]]]) -> dict[str, Any]:
    return {"annotation": {
        "folder": "VOC2007", "filename": f"{image_id}.jpg", "size": {"width": W, "height": H, "depth": 3},
        "segmented": 0,
        "object": [{"name": name, "pose": "Left", "truncated": 0, "difficult": 0,
                    "bndbox": dict(zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True))} for name, box in objects],
    }}


ANNOTATIONS = {"000001": _annotation("000001", [("cat", (2, 3, 20, 18)), ("dog", (10, 5, 32, 24))]),
               "000002": _annotation("000002", [("person", (1, 1, 8, 9))])}
RAW_XML_TEXT = {"&e;", "&undefined;", "<b>", "]]>", "<![CDATA[1]]>", "&#0;", "&#x110000;"}  # written unescaped
XML_PROLOGUES = st.sampled_from([
    "", "", "", "", '<?xml version="1.0" encoding="utf-8"?>\n', '<?xml version="1.0" encoding="klingon"?>\n',
    '<?xml version="1.0" encoding="iso-8859-1"?>\n', '<?xml version="2.0"?>\n',
    '<!DOCTYPE annotation [<!ENTITY e "7">]>\n',
    '<!DOCTYPE annotation [<!ENTITY e SYSTEM "file:///etc/hostname">]>\n',
    '<!DOCTYPE a [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY e "&b;&b;&b;&b;&b;&b;">]>\n',
])
VOC_TEXT = st.sampled_from(sorted(RAW_XML_TEXT))


def xml_text(tree: Any) -> str:
    """A tree as XML: each item of a mapping is an element (a list repeats its tag), a scalar is the text."""
    def element(tag: Any, value: Any) -> str:
        if isinstance(value, list):
            return "".join(element(tag, v) for v in value)
        if isinstance(value, dict):
            return f"<{tag}>{''.join(element(k, v) for k, v in value.items())}</{tag}>"
        if value is None:
            return f"<{tag}/>"
        text = str(value)
        return f"<{tag}>{text if text in RAW_XML_TEXT else escape(text)}</{tag}>"

    if isinstance(tree, dict):
        return "".join(element(k, v) for k, v in tree.items())
    return escape(str(tree))


def xml_file(valid: Any) -> st.SearchStrategy[bytes]:
    """The bytes of an annotation file: a prologue and a mutation of `valid`, sometimes corrupted byte-wise."""
    keys = st.one_of(st.sampled_from(["object", "name", "bndbox", "size", "width", "difficult", "xmin", "a b", "1x"]),
                     VOC_TEXT)
    return st.tuples(XML_PROLOGUES, mutated(valid, keys=keys)).flatmap(
        lambda parts: corrupted(parts[0] + xml_text(parts[1])))


VOC_ROOT = scratch_dir("voc")
VOC_YEAR = VOC_ROOT / "VOCdevkit" / "VOC2007"
_write_jpegs(VOC_YEAR / "JPEGImages", [f"{i}.jpg" for i in ANNOTATIONS])


@FUZZ
@given(files=st.fixed_dictionaries({i: xml_file(tree) for i, tree in ANNOTATIONS.items()}),
       image_set=st.one_of(st.just(list(ANNOTATIONS)), mutated(list(ANNOTATIONS), max_mutations=2)).flatmap(
           lambda ids: corrupted("\n".join(map(str, ids if isinstance(ids, list) else [ids])))),
       mode=st.sampled_from(["error", "skip"]))
def test_fuzz_voc_annotations(files: dict[str, bytes], image_set: bytes, mode: str) -> None:
    annotations, sets = scratch_dir("voc/VOCdevkit/VOC2007/Annotations"), scratch_dir("voc/VOCdevkit/VOC2007/ImageSets")
    for image_id, data in files.items():
        (annotations / f"{image_id}.xml").write_bytes(data)
    (sets / "Main").mkdir()
    (sets / "Main" / "trainval.txt").write_bytes(image_set)
    accepted_or_refused("VOC annotations", lambda: load_voc_records(VOC_ROOT, "2007:trainval", on_bad_annotation=mode))


# ----- COCO results files ----------------------------------------------------------------------------------
RESULTS = [{"image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8], "score": 0.9},
           {"image_id": 1, "category_id": 2, "bbox": [19.5, 4, 12, 20], "score": 0.25},
           {"image_id": 2, "category_id": 2, "bbox": [1, 1, 30, 22], "score": 0.5}]


@FUZZ
@given(results=json_file(RESULTS), instances=st.one_of(st.just(json_text(INSTANCES).encode()), json_file(INSTANCES)))
def test_fuzz_coco_results(results: bytes, instances: bytes) -> None:
    folder = scratch_dir("coco-results")
    (folder / "instances.json").write_bytes(instances)
    (folder / "results.json").write_bytes(results)
    accepted_or_refused("COCO results", lambda: evaluate_coco_results(folder / "instances.json",
                                                                      folder / "results.json"))


# ----- colt eval -------------------------------------------------------------------------------------------
class CommandRefused(UserError):
    """`colt eval` exited non-zero with its one `Error:` line."""


def _eval(args: list[str]) -> None:
    """`colt eval ARGS`: returns on success, raises CommandRefused after an `Error:` line and exit status 1 (or a
    usage error's 2), and re-raises whatever else escaped the command."""
    result = CliRunner().invoke(eval_command, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if result.exit_code != 0:
        assert result.exit_code in (1, 2) and "Traceback" not in result.output, result.output
        assert [line for line in result.output.splitlines() if line.startswith("Error:")], result.output
        raise CommandRefused(result.output)


EVAL_VOC = scratch_dir("eval-voc")
_year = EVAL_VOC / "VOCdevkit" / "VOC2007"
_write_jpegs(_year / "JPEGImages", [f"{i}.jpg" for i in ANNOTATIONS])
(_year / "Annotations").mkdir()
for _id, _tree in ANNOTATIONS.items():
    (_year / "Annotations" / f"{_id}.xml").write_text(xml_text(_tree), encoding="utf-8")
(_year / "ImageSets" / "Main").mkdir(parents=True)
(_year / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in ANNOTATIONS), encoding="utf-8")
VOC_RESULTS = {"cat": [["000001", 0.9, 2, 3, 20, 18], ["000002", 0.1, 1, 1, 5, 5]],
               "dog": [["000001", 0.8, 10.5, 5, 31, 23.5]], "person": [["000002", 0.7, 1, 1, 8, 9]]}


def _results_line(entry: Any) -> str:
    return " ".join(map(str, entry)) if isinstance(entry, list) else str(entry)


@FUZZ
@given(data=st.data(), source=st.sampled_from(["voc", "coco"]),
       metric=st.sampled_from([None, "voc07", "voc12", "coco"]), out=st.booleans())
def test_fuzz_eval_command(data: st.DataObject, source: str, metric: str | None, out: bool) -> None:
    folder = scratch_dir("eval")
    args = ["--metric", metric] if metric else []
    args += ["--out", str(folder / "out.json")] if out else []
    if source == "coco":
        (folder / "instances.json").write_bytes(data.draw(st.one_of(st.just(json_text(INSTANCES).encode()),
                                                                    json_file(INSTANCES)), label="instances"))
        (folder / "results.json").write_bytes(data.draw(json_file(RESULTS), label="results"))
        args += ["--coco-annotations", str(folder / "instances.json"), "--results", str(folder / "results.json")]
    else:
        per_class = data.draw(mutated(VOC_RESULTS), label="results files")
        results = folder / "results"
        results.mkdir()
        for name, lines in (per_class.items() if isinstance(per_class, dict) else []):
            if name in VOC_RESULTS:  # a results file per class the devkit has; junk names would be paths
                text = "\n".join(map(_results_line, lines if isinstance(lines, list) else [lines]))
                (results / f"{RESULTS_PREFIX}{name}.txt").write_bytes(data.draw(corrupted(text), label=name))
        args += ["--voc-root", str(EVAL_VOC), "--image-set", "test", "--results", str(results)]
    accepted_or_refused("colt eval", lambda: _eval(args))


# ----- what the fuzzer found ---------------------------------------------------------------------------------
def test_image_sets_that_are_not_year_set_pairs_are_refused_at_config_load() -> None:
    """`--set data.train_sets=foo` loaded, then stopped the run with a ValueError traceback."""
    from colt_core.commands.train import load_run_config
    from colt_core.config import ConfigError

    config = Path(__file__).resolve().parents[2] / "configs" / "voc_synth_tiny.yaml"
    with pytest.raises(ConfigError, match=r"data\.train_sets: image sets 'foo': expected 'YEAR:SET'"):
        load_run_config(str(config), ["data.train_sets=foo"], None)
    with pytest.raises(ConfigError, match=r"data\.test_sets: image sets '2007:': expected"):
        load_run_config(str(config), ["data.test_sets='2007:'"], None)


def _voc_devkit(root: Path, ids: list[str], image_set: bytes) -> Path:
    year = root / "VOCdevkit" / "VOC2007"
    _write_jpegs(year / "JPEGImages", [f"{i}.jpg" for i in ANNOTATIONS])
    (year / "Annotations").mkdir()
    for image_id in ANNOTATIONS:
        (year / "Annotations" / f"{image_id}.xml").write_text(xml_text(ANNOTATIONS[image_id]), encoding="utf-8")
    (year / "ImageSets" / "Main").mkdir(parents=True)
    (year / "ImageSets" / "Main" / "trainval.txt").write_bytes(image_set)
    return root


@pytest.mark.parametrize("bad_id", ["0\x001", "a" * 300], ids=["NUL byte", "name too long"])
def test_an_image_id_no_file_can_have_is_a_bad_annotation(tmp_path: Path, bad_id: str) -> None:
    """An id with a NUL byte (in skip mode) or longer than a file name may be raised ValueError and OSError."""
    root = _voc_devkit(tmp_path, list(ANNOTATIONS), f"000001\n{bad_id}\n000002\n".encode())
    with pytest.raises(DetectionDataError, match="image set file" if len(bad_id) > 3 else "annotation file not found"):
        load_voc_records(root, "2007:trainval")
    records, stats = load_voc_records(root, "2007:trainval", on_bad_annotation="skip")
    assert [r.image_id for r in records] == ["000001", "000002"] and stats.skipped_image_ids == [bad_id]


def test_an_image_set_with_a_byte_order_mark_names_its_first_image() -> None:
    root = _voc_devkit(scratch_dir("bom"), list(ANNOTATIONS), b"\xef\xbb\xbf000001\n000002\n")
    records, _ = load_voc_records(root, "2007:trainval")
    assert [r.image_id for r in records] == ["000001", "000002"]


def test_colt_eval_refuses_a_results_file_that_is_not_utf8_in_one_line() -> None:
    results = scratch_dir("not-utf8-results")
    (results / f"{RESULTS_PREFIX}cat.txt").write_bytes(b"000001 0.9 2 3 20 18\n\xff\xfe\n")
    result = CliRunner().invoke(eval_command, ["--voc-root", str(EVAL_VOC), "--image-set", "test", "--results",
                                               str(results)])
    assert result.exit_code == 1 and not isinstance(result.exception, UnicodeDecodeError)
    assert f"{RESULTS_PREFIX}cat.txt: not a results file (byte 21 is not UTF-8 text" in result.output
