"""Bundle manifests are validated before anything runs, and `open_bundle` picks the
backend of the bundle's format. Most cases use synthetic bundles (placeholder graphs,
consistent manifest: no torch, no runtime); the backend cases use the micro ONNX bundle."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from bundle_helpers import (MICRO_SPEC, copy_bundle, make_fake_bundle, micro_onnx_bundle, read_manifest,
                            write_manifest)
from sam2_edge.errors import BackendUnavailableError, BundleError, InputError
from sam2_edge.runtimes import bundle_backends
from sam2_edge.contract import (GraphEntry, Manifest, Preprocessing, hash_graph, load_manifest,
                                tensor_to_dict)
from sam2_edge.contract import STAGES, TrackerSpec


@pytest.fixture()
def fake(tmp_path) -> Path:
    return make_fake_bundle(tmp_path / "b")


def edit(root: Path, fn) -> None:
    m = read_manifest(root)
    fn(m)
    write_manifest(root, m)


def raises(root, *needles):
    with pytest.raises(BundleError) as e:
        load_manifest(root)
    msg = str(e.value)
    for n in needles:
        assert n.lower() in msg.lower(), f"{n!r} not in error: {msg}"
    return msg


# ------------------------------------------------------------------ valid bundles
def test_valid_manifest_is_typed(fake):
    m = load_manifest(fake)
    assert isinstance(m, Manifest)
    assert m.schema_version == 1 and m.format == "onnx" and m.precision == "fp32" and m.variant == "micro"
    assert isinstance(m.spec, TrackerSpec) and m.spec == MICRO_SPEC
    assert isinstance(m.preprocessing, Preprocessing)
    assert m.preprocessing.image_size == 256 and m.preprocessing.colour_order == "RGB"
    assert m.preprocessing.resize == "pil-bicubic"
    assert list(m.graphs) == list(STAGES)
    for stage, g in m.graphs.items():
        assert isinstance(g, GraphEntry)
        assert g.path == (fake / f"{stage}.onnx").resolve()
        assert (g.inputs, g.outputs) == MICRO_SPEC.io()[stage]
    assert m.stage_files == {s: (fake / f"{s}.onnx").resolve() for s in STAGES}


@pytest.mark.parametrize("cond_slots", [1, 3])
def test_other_ring_capacities_validate(tmp_path, cond_slots):
    spec = TrackerSpec(image_size=256, d_model=64, mem_dim=16, cond_slots=cond_slots)
    m = load_manifest(make_fake_bundle(tmp_path / "b", spec=spec))
    assert m.spec.mem_slots == cond_slots + 6
    assert m.graphs["memory_attention"].inputs[2].shape == (1, cond_slots + 6, 16, 16, 16)


# ------------------------------------------------------------------ JSON / keys / types
def test_missing_folder_and_manifest(tmp_path):
    raises(tmp_path / "nope", "does not exist", "sam2-edge export")
    (tmp_path / "empty").mkdir()
    raises(tmp_path / "empty", "manifest.json", "not a sam2-edge bundle")
    (tmp_path / "file").write_text("x")
    raises(tmp_path / "file", "not a folder")


@pytest.mark.parametrize("text", ["{", "", "not json", '{"schema_version": 1,}', "[1, 2]", '"x"',
                                  '{"schema_version": NaN}'])
def test_json_parse_errors(fake, text):
    (fake / "manifest.json").write_text(text)
    raises(fake, "re-export")


def test_non_utf8_manifest(fake):
    (fake / "manifest.json").write_bytes(b"\xff\xfe\x00{")
    raises(fake, "not valid JSON")


@pytest.mark.parametrize("key", ["schema_version", "format", "precision", "variant", "model_config", "spec",
                                 "graphs", "preprocessing", "checkpoint", "exporter", "libraries", "created"])
def test_missing_top_level_key(fake, key):
    edit(fake, lambda m: m.pop(key))
    raises(fake, f"missing '{key}'", "re-export")


@pytest.mark.parametrize("path", ["spec.cond_slots", "spec.image_size", "graphs.mask_decoder.sha256",
                                  "graphs.image_encoder.file", "graphs.memory_encoder.inputs",
                                  "preprocessing.mean", "checkpoint.sha256"])
def test_missing_nested_key(fake, path):
    def drop(m):
        *head, last = path.split(".")
        d = m
        for k in head:
            d = d[k]
        d.pop(last)
    edit(fake, drop)
    raises(fake, f"missing '{path}'")


def test_missing_stage(fake):
    edit(fake, lambda m: m["graphs"].pop("memory_attention"))
    raises(fake, "no graph for ['memory_attention']")


@pytest.mark.parametrize("setter, needle", [
    (lambda m: m.__setitem__("schema_version", "1"), "schema_version"),
    (lambda m: m.__setitem__("schema_version", True), "schema_version"),
    (lambda m: m.__setitem__("schema_version", 1.0), "schema_version"),
    (lambda m: m.__setitem__("graphs", []), "graphs"),
    (lambda m: m["spec"].__setitem__("image_size", "256"), "spec.image_size"),
    (lambda m: m["spec"].__setitem__("cond_slots", 0), "spec.cond_slots"),
    (lambda m: m["spec"].__setitem__("max_clicks", -1), "spec.max_clicks"),
    (lambda m: m["graphs"]["image_encoder"].__setitem__("inputs", "image"), "inputs"),
    (lambda m: m["graphs"]["image_encoder"]["inputs"][0].__setitem__("shape", [1, 3, "S", 256]), "shape"),
    (lambda m: m["graphs"]["image_encoder"]["inputs"][0].__setitem__("shape", [1, 3, -1, 256]), "shape"),
    (lambda m: m["graphs"]["image_encoder"]["inputs"][0].__setitem__("dtype", "float64"), "dtype"),
    (lambda m: m["graphs"]["image_encoder"].__setitem__("sha256", "abc"), "sha256"),
    (lambda m: m["graphs"]["image_encoder"].__setitem__("file", 7), "file"),
    (lambda m: m["preprocessing"].__setitem__("mean", [0.5, 0.5]), "mean"),
    (lambda m: m["preprocessing"].__setitem__("std", [0.2, 0.0, 0.2]), "std"),
    (lambda m: m.__setitem__("format", "tflite"), "format"),
    (lambda m: m.__setitem__("precision", "int3"), "precision"),
])
def test_wrong_types_and_values(fake, setter, needle):
    edit(fake, setter)
    raises(fake, needle)


def test_newer_schema_says_upgrade(fake):
    edit(fake, lambda m: m.__setitem__("schema_version", 2))
    msg = raises(fake, "newer", "upgrade sam2-edge")
    assert "2" in msg and "1" in msg


def test_schema_zero_rejected(fake):
    edit(fake, lambda m: m.__setitem__("schema_version", 0))
    raises(fake, "schema_version 0")


def test_unknown_spec_key_from_newer_writer(fake):
    edit(fake, lambda m: m["spec"].__setitem__("max_boxes", 2))
    raises(fake, "unknown keys", "upgrade sam2-edge")


# ------------------------------------------------------------------ paths
def test_absolute_graph_path(fake, tmp_path):
    outside = tmp_path / "evil.onnx"
    outside.write_bytes(b"x")
    edit(fake, lambda m: m["graphs"]["image_encoder"].__setitem__("file", str(outside)))
    raises(fake, "absolute", "do not use it")


@pytest.mark.parametrize("rel", ["../evil.onnx", "sub/../../evil.onnx", "..\\evil.onnx"])
def test_dotdot_graph_path(fake, tmp_path, rel):
    (tmp_path / "evil.onnx").write_bytes(b"x")
    edit(fake, lambda m: m["graphs"]["mask_decoder"].__setitem__("file", rel))
    raises(fake, "'..'")


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_symlink_escaping_bundle(fake, tmp_path):
    target = tmp_path / "outside.onnx"
    shutil.copy(fake / "memory_encoder.onnx", target)
    os.remove(fake / "memory_encoder.onnx")
    os.symlink(target, fake / "memory_encoder.onnx")
    raises(fake, "outside the bundle", "symbolic link")


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_symlink_inside_bundle_is_fine(fake):
    os.rename(fake / "memory_encoder.onnx", fake / "real.onnx")
    os.symlink("real.onnx", fake / "memory_encoder.onnx")
    assert load_manifest(fake).graphs["memory_encoder"].path == (fake / "real.onnx").resolve()


def test_missing_graph_file(fake):
    os.remove(fake / "mask_decoder.onnx")
    raises(fake, "mask_decoder.onnx", "missing", "copy the whole folder")


def test_suffix_must_match_format(fake):
    os.rename(fake / "mask_decoder.onnx", fake / "mask_decoder.pte")
    edit(fake, lambda m: m["graphs"]["mask_decoder"].__setitem__("file", "mask_decoder.pte"))
    raises(fake, "suffix")


def test_two_stages_one_file(fake):
    edit(fake, lambda m: m["graphs"]["mask_decoder"].update(file="image_encoder.onnx",
                                                            sha256=m["graphs"]["image_encoder"]["sha256"]))
    raises(fake, "same graph file")


# ------------------------------------------------------------------ hashes
def test_altered_graph_detected(fake):
    with open(fake / "memory_attention.onnx", "ab") as f:
        f.write(b"\0")
    msg = raises(fake, "memory_attention.onnx", "altered or corrupted", "re-export")
    assert read_manifest(fake)["graphs"]["memory_attention"]["sha256"] in msg


def test_hash_check_can_be_skipped_for_inspection(fake):
    with open(fake / "memory_attention.onnx", "ab") as f:
        f.write(b"\0")
    assert load_manifest(fake, verify_hashes=False).format == "onnx"


def test_mlpackage_directory_hash(tmp_path):
    root = make_fake_bundle(tmp_path / "c", fmt="coreml")
    m = load_manifest(root)
    pkg = m.graphs["image_encoder"].path
    assert pkg.is_dir() and pkg.suffix == ".mlpackage"
    h = hash_graph(pkg)
    # same content under another folder name -> same hash; order of creation does not matter
    other = tmp_path / "copy.mlpackage"
    (other / "Data" / "com.apple.CoreML").mkdir(parents=True)
    for rel in ("Data/com.apple.CoreML/weights.bin", "Manifest.json", "Data/com.apple.CoreML/model.mlmodel"):
        shutil.copy(pkg / rel, other / rel)
    assert hash_graph(other) == h
    # renaming a file inside changes the hash (paths are hashed too)
    os.rename(other / "Manifest.json", other / "manifest2.json")
    assert hash_graph(other) != h
    # altering a weight inside the package is detected
    with open(pkg / "Data" / "com.apple.CoreML" / "weights.bin", "r+b") as f:
        f.write(b"\x07")
    raises(root, "image_encoder.mlpackage", "altered")


def test_mlpackage_extra_file_detected(tmp_path):
    root = make_fake_bundle(tmp_path / "c", fmt="coreml")
    (root / "mask_decoder.mlpackage" / "Data" / "extra.bin").write_bytes(b"1")
    raises(root, "mask_decoder.mlpackage", "altered")


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_mlpackage_symlink_escaping(tmp_path):
    root = make_fake_bundle(tmp_path / "c", fmt="coreml")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"secret")
    os.symlink(secret, root / "memory_encoder.mlpackage" / "Data" / "link.bin")
    raises(root, "outside the bundle")


def test_mlpackage_must_be_folder(tmp_path):
    root = make_fake_bundle(tmp_path / "c", fmt="coreml")
    shutil.rmtree(root / "memory_encoder.mlpackage")
    (root / "memory_encoder.mlpackage").write_bytes(b"x")
    raises(root, ".mlpackage folder")


def test_data_files_checked(fake, tmp_path):
    (fake / "image_encoder.onnx.data").write_bytes(b"weights")
    edit(fake, lambda m: m["graphs"]["image_encoder"].__setitem__(
        "data_files", [{"file": "image_encoder.onnx.data", "sha256": hash_graph(fake / "image_encoder.onnx.data")}]))
    assert load_manifest(fake).graphs["image_encoder"].data_files[0].file == "image_encoder.onnx.data"
    (fake / "image_encoder.onnx.data").write_bytes(b"weightz")
    raises(fake, "image_encoder.onnx.data", "altered")
    edit(fake, lambda m: m["graphs"]["image_encoder"]["data_files"][0].__setitem__("file", "../x.data"))
    raises(fake, "'..'")


# ------------------------------------------------------------------ shapes
def test_graph_shape_not_fitting_spec(fake):
    edit(fake, lambda m: m["graphs"]["memory_attention"]["inputs"][2].__setitem__("shape", [1, 9, 16, 16, 16]))
    raises(fake, "graphs.memory_attention.inputs", "memory [1, 9, 16, 16, 16]", "[1, 8, 16, 16, 16]")


def test_spec_changed_without_graphs(fake):
    # the graphs were made for 2 conditioning slots; a manifest claiming 3 does not fit them
    edit(fake, lambda m: m["spec"].__setitem__("cond_slots", 3))
    raises(fake, "do not fit", "memory_attention")


def test_image_size_changed_everywhere_but_graphs(fake):
    def f(m):
        m["spec"]["image_size"] = 512
        m["preprocessing"]["image_size"] = 512
        m["model_config"]["image_size"] = 512
    edit(fake, f)
    raises(fake, "graphs.image_encoder.inputs", "image [1, 3, 256, 256]")


def test_outputs_swapped(fake):
    edit(fake, lambda m: m["graphs"]["image_encoder"]["outputs"].reverse())
    raises(fake, "graphs.image_encoder.outputs")


def test_missing_output(fake):
    edit(fake, lambda m: m["graphs"]["mask_decoder"]["outputs"].pop())
    raises(fake, "3 tensors", "4")


def test_dtype_mismatch(fake):
    edit(fake, lambda m: m["graphs"]["mask_decoder"]["inputs"][4].__setitem__("dtype", "float32"))
    raises(fake, "point_labels", "int32")


def test_preprocessing_size_mismatch(fake):
    edit(fake, lambda m: m["preprocessing"].__setitem__("image_size", 1024))
    raises(fake, "preprocessing.image_size 1024")


def test_model_config_mismatch(fake):
    edit(fake, lambda m: m["model_config"].__setitem__("d_model", 256))
    raises(fake, "model_config.d_model")


# ------------------------------------------------------------------ open_bundle
@pytest.mark.parametrize("fmt, expected", [("onnx", "onnxruntime"), ("executorch", "executorch"),
                                           ("coreml", "coreml")])
def test_open_bundle_picks_backend_of_format(tmp_path, monkeypatch, fmt, expected):
    root = make_fake_bundle(tmp_path / fmt, fmt=fmt)
    seen = {}

    class Recorder:
        def __init__(self, spec, stage_files, **options):
            seen.update(spec=spec, files=stage_files, options=options)

    def fake_class(name):
        seen["name"] = name
        return Recorder, bundle_backends.BACKENDS[name].extra

    monkeypatch.setattr(bundle_backends, "_backend_class", fake_class)
    be = bundle_backends.open_bundle(root, None, threads=1, isolate=False)  # placeholder graphs: no smoke run
    assert isinstance(be, Recorder) and seen["name"] == expected
    assert seen["spec"] == MICRO_SPEC and seen["options"] == {"threads": 1}
    # the backend gets the graphs' bytes, read once and checked against the manifest, not paths
    m = load_manifest(root)
    assert set(seen["files"]) == set(STAGES)
    for stage, blob in seen["files"].items():
        got = hash_graph(m.graphs[stage].path)
        assert blob.file == m.graphs[stage].file and got == m.graphs[stage].sha256
        assert (blob.data or blob.package) and (not blob.data or hashlib.sha256(blob.data).hexdigest() == got)
    assert be.manifest.format == fmt


def test_backend_name_aliases_and_mismatch(fake):
    m = load_manifest(fake)
    assert bundle_backends.backend_name(m, None) == "onnxruntime"
    assert bundle_backends.backend_name(m, "onnx") == "onnxruntime"
    assert bundle_backends.backend_name(m, "ORT") == "onnxruntime"
    with pytest.raises(InputError, match="coreml bundles"):
        bundle_backends.backend_name(m, "coreml")
    with pytest.raises(InputError, match="from_checkpoint"):
        bundle_backends.backend_name(m, "torch")
    with pytest.raises(InputError, match="unknown backend"):
        bundle_backends.backend_name(m, "tensorflow")


def test_open_bundle_validates_first(fake, monkeypatch):
    def never(name):
        raise AssertionError("a backend was built for an invalid bundle")
    monkeypatch.setattr(bundle_backends, "_backend_class", never)
    with open(fake / "image_encoder.onnx", "ab") as f:
        f.write(b"!")
    with pytest.raises(BundleError, match="altered"):
        bundle_backends.open_bundle(fake)


def test_missing_runtime_names_the_extra(fake, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    with pytest.raises(BackendUnavailableError, match=r"pip install 'sam2-edge\[onnx\]'"):
        bundle_backends.open_bundle(fake)


def test_missing_backend_module(tmp_path, monkeypatch):
    root = make_fake_bundle(tmp_path / "et", fmt="executorch")
    monkeypatch.setitem(bundle_backends._CLASSES, "executorch", ("no_such_backend_module", "X"))
    with pytest.raises(BackendUnavailableError, match="no executorch backend"):
        bundle_backends.open_bundle(root)


def test_tracker_from_bundle_rejects_invalid(fake):
    from sam2_edge.runtimes import Tracker

    os.remove(fake / "memory_encoder.onnx")
    with pytest.raises(BundleError, match="missing"):
        Tracker.from_bundle(str(fake))


# ------------------------------------------------------------------ with the real micro ONNX bundle
@pytest.fixture(scope="module")
def micro_bundle(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return micro_onnx_bundle(tmp_path_factory)


def test_open_real_bundle_onnxruntime(micro_bundle):
    from sam2_edge.runtimes.backends.onnxruntime_backend import OnnxRuntimeBackend

    be = bundle_backends.open_bundle(micro_bundle, threads=1)
    assert isinstance(be, OnnxRuntimeBackend)
    assert be.spec == load_manifest(micro_bundle).spec
    assert "CPUExecutionProvider" in be.describe()
    be2 = bundle_backends.open_bundle(micro_bundle, "onnx", providers=["cpu"])
    assert be2.active_providers == ["CPUExecutionProvider"]
    with pytest.raises(InputError, match="does not take options"):
        bundle_backends.open_bundle(micro_bundle, warp_speed=9)


def test_unavailable_execution_provider(micro_bundle):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        bundle_backends.open_bundle(micro_bundle, providers=["cuda"])


def test_graph_of_wrong_stage_detected_by_backend(micro_bundle, tmp_path):
    """A graph file swapped for another stage's (with the manifest's hash updated to match)
    passes the manifest checks but not the backend's check of the graph's own inputs."""
    root = copy_bundle(micro_bundle, tmp_path / "swapped")
    shutil.copy(root / "memory_encoder.onnx", root / "mask_decoder.onnx")
    edit(root, lambda m: m["graphs"]["mask_decoder"].__setitem__("sha256", hash_graph(root / "mask_decoder.onnx")))
    load_manifest(root)
    with pytest.raises(BundleError, match="mask_decoder graph's inputs"):
        bundle_backends.open_bundle(root)


def test_corrupt_graph_bytes_with_matching_hash(micro_bundle, tmp_path):
    root = copy_bundle(micro_bundle, tmp_path / "garbage")
    (root / "image_encoder.onnx").write_bytes(b"\x08\x07garbage" * 100)
    edit(root, lambda m: m["graphs"]["image_encoder"].__setitem__("sha256", hash_graph(root / "image_encoder.onnx")))
    with pytest.raises(BundleError, match="cannot load the image_encoder graph"):
        bundle_backends.open_bundle(root)


def test_real_manifest_round_trip(micro_bundle):
    m = load_manifest(micro_bundle)
    raw = read_manifest(micro_bundle)
    for stage in STAGES:
        assert raw["graphs"][stage]["inputs"] == [tensor_to_dict(t) for t in m.spec.io()[stage][0]]
        assert m.graphs[stage].sha256 == hash_graph(micro_bundle / f"{stage}.onnx")
        assert m.graphs[stage].bytes == (micro_bundle / f"{stage}.onnx").stat().st_size
    assert json.loads(json.dumps(raw)) == raw
    assert np.allclose(m.preprocessing.mean, (0.485, 0.456, 0.406))
