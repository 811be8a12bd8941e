"""Spine v2: one truth from compressor to chip.

* the memories of the generated design hold exactly the manifest's ROM files (every scheme);
* a ROM edit changes the Verilog and the golden model together, and only a deliberate re-seal lets it load;
* the sealed manifest and its reference vectors catch edits that the ROM checksums alone would not;
* the array is part of the artefact; the registry fails loudly; ROMs of the wrong kind/width are refused;
* layering: sw/ library code imports nothing from hw/sim/boards, hw/ nothing from sim/boards.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from amaranth.hdl import Fragment

from sparsyn.hw.engines import build_engine, layer_engine, plan_layer
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.manifest import (check_reference, load_manifest, load_reference, read_manifest_json, reseal,
                                 seal_of)
from sparsyn.sw.schedule import ArrayConfig
from sparsyn.sw.schemes import REGISTRY, Rom, get_scheme
from sparsyn.sw.testing import pack_layer, random_pattern_layer, random_permdiag_layer, random_quant_layer

ROOT = Path(__file__).resolve().parents[1]


def scheme_layer(scheme: str, array: ArrayConfig, seed: int = 0):
    """A small random conv layer suited to ``scheme`` and its packed form for ``array``."""
    rng = np.random.default_rng(seed)
    if scheme == "ternary":
        layer = random_quant_layer(rng, "conv", 3, 5, 5, 6, 3, 1, 1, weight_bits=2, name=f"{scheme}_l")
        layer.weight = np.clip(layer.weight, -1, 1)
        layer.weight[:, 8:16] = 0          # one pruned tile per section: no slot, no ROM word
        return layer, pack_layer(layer, scheme, array=array, tile=8)
    if scheme in ("packcnn", "tight"):
        layer = random_quant_layer(rng, "conv", 3, 5, 5, 6, 3, 1, 1, density=0.3, name=f"{scheme}_l")
        return layer, pack_layer(layer, scheme, array=array, alpha=2)
    if scheme == "pattern":
        layer, _, _ = random_pattern_layer(rng, "conv", 3, 5, 5, 6, 3, 1, 1, n=4, patterns=5, zero_fraction=0.2,
                                           name=f"{scheme}_l")
        return layer, pack_layer(layer, scheme, array=array, patterns=5)
    if scheme == "permdiag":      # FC layers on its own engine (no array)
        layer, _ = random_permdiag_layer(rng, 10, 13, 3, name=f"{scheme}_l")
        return layer, pack_layer(layer, scheme, array=array, p=3, pes=2)
    layer = random_quant_layer(rng, "conv", 3, 5, 5, 6, 3, 1, 1, name=f"{scheme}_l")
    return layer, pack_layer(layer, scheme, array=array)


@pytest.mark.parametrize("scheme", list(REGISTRY))
def test_design_memories_hold_exactly_the_rom_files(scheme):
    """Every memory the engine initialises is one of the layer's ROMs, word for word, and their bits add up
    to the ROM bits the manifest reports (nothing rebuilt, nothing left out)."""
    layer, packed = scheme_layer(scheme, ArrayConfig(2, 4))
    assert np.array_equal(get_scheme(scheme).decode(packed), layer.weight)
    engine = layer_engine(layer, packed)
    Fragment.get(engine, None)
    mems, tables = engine.rom_memories, engine.rom_tables
    assert set(mems) | set(tables) == set(packed.roms) and not set(mems) & set(tables)
    assert bool(tables) == (scheme == "pattern")     # only the pattern PEs decode a table ROM as constants
    for name, mem in mems.items():
        rom = packed.roms[name]
        assert (mem.shape.width, mem.depth) == (rom.width, rom.depth), name
        assert [int(v) for v in mem.init] == rom.words, name
    design_bits = (sum(mem.shape.width * mem.depth for mem in mems.values())
                   + sum(packed.roms[name].bits for name in tables))
    assert design_bits == packed.rom_bits == engine.plan.rom_bits
    kinds = packed.bits_by_kind()
    assert kinds["weights"] and kinds["index"] and kinds["constants"]
    assert bool(kinds["table"]) == (scheme != "permdiag")    # the array's pass table; permdiag needs no schedule
    assert sum(kinds.values()) == packed.rom_bits


def test_pattern_table_rom_is_what_the_pes_decode():
    """The pattern PEs' id decoders come from the ``patterns`` ROM: swap two of its words and the engine
    (Amaranth simulation) computes exactly the golden output of the weights the edited ROMs decode to."""
    from sparsyn.hw.amaranth_sim import simulate_engine
    from sparsyn.sw.golden import run_layer
    from sparsyn.sw.schemes.pattern import PatternScheme
    from sparsyn.sw.testing import random_input
    layer, packed = scheme_layer("pattern", ArrayConfig(2, 4))
    words = packed.roms["patterns"].words
    packed.roms["patterns"] = Rom(packed.roms["patterns"].width, [words[1], words[0]] + words[2:], "table")
    edited = PatternScheme.decode(packed)
    assert not np.array_equal(edited, layer.weight)
    layer.weight = edited
    x = random_input(np.random.default_rng(3), layer)[0]
    outs, _ = simulate_engine(layer_engine(layer, packed), [x.numpy().ravel()])
    assert np.array_equal(outs[0], run_layer(layer, x[None])[0].numpy().ravel())


def test_manifest_bits_equal_generated_design_bits(default_dense_manifest):
    """Through the files: the bits of the generated designs' initialised memories equal the manifest's ROM
    bits, layer by layer, and the report's stored bits are their sum."""
    from sparsyn.hw.generate import build_modules
    model, packed, doc = load_manifest(default_dense_manifest)
    total = 0
    for layer, component, _, rec in build_modules(model, packed):
        Fragment.get(component, None)
        if rec["kind"] not in ("conv", "linear"):
            continue
        bits = sum(m.shape.width * m.depth for m in component.rom_memories.values())
        files = sum(info["width"] * info["depth"] for info in doc["layers"][[l["name"] for l in doc["layers"]]
                                                                           .index(layer.name)]["roms"].values())
        assert bits == files == rec["rom_bits"]
        total += bits
    assert total == doc["report"]["stored_bits"]
    assert doc["report"]["weight_bits"] + doc["report"]["index_bits"] + doc["report"]["other_bits"] == total


@pytest.fixture(scope="module")
def default_dense_manifest(tmp_path_factory):
    from sparsyn.sw.compress import compress
    out = tmp_path_factory.mktemp("m") / "dense"
    compress("default", "dense", {}, out, progress=False, log=lambda *a, **k: None, array="4x4")
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_rom_edit_changes_verilog_and_golden_together(default_dense_manifest, tmp_path):
    """Edit one weight word of conv2's ROM file: refused until re-sealed on purpose; then the generated Verilog
    and the golden model both change, the RTL (Amaranth simulation) equals the new golden output, and the
    stored reference vectors expose that the artefact no longer computes what was compressed."""
    from sparsyn.hw.amaranth_sim import simulate_engine
    from sparsyn.hw.generate import convert
    from sparsyn.sw.golden import run_golden
    m = _copy(default_dense_manifest, tmp_path / "edited")
    model0, packed0, doc0 = load_manifest(m)
    x, ref = load_reference(m, doc0)
    x = torch.as_tensor(x[:1], dtype=torch.int64)
    gold0 = run_golden(model0, x)
    idx = [l.name for l in model0.layers].index("conv2")
    v0 = convert(layer_engine(model0.layers[idx], packed0["conv2"]), "conv2")

    rom = m / doc0["layers"][idx]["roms"]["weights"]["file"]
    words = rom.read_text().split()
    w0 = int(words[0], 16)
    words[0] = f"{w0 ^ 0x7f:0{len(words[0])}x}"          # flip 7 bits of PE entry (row 0, column 0)
    rom.write_text("\n".join(words) + "\n")
    with pytest.raises(SparsynError, match="checksum mismatch"):
        load_manifest(m)

    reseal(m)
    model1, packed1, doc1 = load_manifest(m)
    assert doc1["seal"] != doc0["seal"]
    assert not np.array_equal(model1.layers[idx].weight, model0.layers[idx].weight)
    changed = np.argwhere(model1.layers[idx].weight != model0.layers[idx].weight)
    assert len(changed) == 1                                  # exactly the one weight the word holds
    v1 = convert(layer_engine(model1.layers[idx], packed1["conv2"]), "conv2")
    assert v1 != v0
    gold1 = run_golden(model1, x)
    assert not np.array_equal(gold1[idx].numpy(), gold0[idx].numpy())
    outs, _ = simulate_engine(layer_engine(model1.layers[idx], packed1["conv2"]), [gold1[idx - 1].reshape(-1).numpy()])
    assert np.array_equal(outs[0], gold1[idx].reshape(-1).numpy())
    with pytest.raises(SparsynError, match="no longer computes what was compressed.*conv2"):
        check_reference(m)
    reseal(m, reference=True)
    assert check_reference(m)["images"] >= 1


@pytest.mark.parametrize("edit", [
    lambda d: d["layers"][0]["pack"].__setitem__("weight_bits", 7),
    lambda d: d["model"].__setitem__("input_scale", d["model"]["input_scale"] * 2),
    lambda d: d["layers"][0].__setitem__("relu", not d["layers"][0]["relu"]),
    lambda d: d["array"].__setitem__("rows", 2),
    lambda d: d["layers"][0]["roms"]["bias"].__setitem__("depth", 3),
])
def test_any_manifest_field_edit_is_refused_by_the_seal(default_dense_manifest, tmp_path, edit):
    m = _copy(default_dense_manifest, tmp_path / "m")
    doc = json.loads((m / "manifest.json").read_text())
    edit(doc)
    (m / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(SparsynError, match="does not match its seal") as err:
        load_manifest(m)
    assert "\n" not in str(err.value)


def test_reference_file_edit_is_refused(default_dense_manifest, tmp_path):
    m = _copy(default_dense_manifest, tmp_path / "m")
    (m / "reference.npz").write_bytes((m / "reference.npz").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(SparsynError, match="reference file"):
        check_reference(m)


def test_seal_covers_every_field(default_dense_manifest):
    doc = read_manifest_json(default_dense_manifest)
    assert doc["seal"] == seal_of(doc)
    assert all("kind" in info for rec in doc["layers"] for info in rec.get("roms", {}).values())
    assert {info["kind"] for rec in doc["layers"] for info in rec.get("roms", {}).values()} == \
        {"weights", "index", "table", "constants"}
    assert all("bias" not in rec and "requant" not in rec for rec in doc["layers"])   # constants live in ROMs


# ---- the array is part of the artefact ---------------------------------------------------------------

def test_another_array_is_refused_with_one_line(default_dense_manifest, tmp_path):
    from sparsyn.hw.generate import generate
    with pytest.raises(SparsynError, match=r"packed for a 4x4 array, not 2x3; re-run 'sparsyn compress --array 2x3'"):
        generate(default_dense_manifest, ArrayConfig(2, 3), tmp_path / "rtl")
    assert not (tmp_path / "rtl").exists()
    model, packed, _ = load_manifest(default_dense_manifest)
    layer = model.compute_layers[0]
    with pytest.raises(SparsynError, match="packed for 4x4, not 2x2"):
        plan_layer(layer, packed[layer.name], ArrayConfig(2, 2))


def test_cli_sim_refuses_another_array(default_dense_manifest, capsys):
    from sparsyn.sw.cli import main
    assert main(["sim", "--manifest", str(default_dense_manifest), "--simulator", "icarus", "--array", "2x2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "re-run 'sparsyn compress --array 2x2'" in err


def test_compress_records_the_array(tmp_path):
    layer, packed = scheme_layer("dense", ArrayConfig(3, 5))
    assert packed.array == ArrayConfig(3, 5, 1)
    assert packed.meta["array"] == {"rows": 3, "cols": 5, "lanes": 1}
    assert plan_layer(layer, packed).array == ArrayConfig(3, 5, 1)


# ---- bad ROMs, bad registry ---------------------------------------------------------------------------

@pytest.mark.parametrize("rom,change,match", [
    ("lanes", lambda r: Rom(r.width, r.words, "weights"), "ROM 'lanes' is weights"),
    ("weights", lambda r: Rom(r.width + 1, r.words, r.kind), "bits x"),
    ("requant", lambda r: Rom(r.width, r.words[:-1], r.kind), "words"),
])
def test_rom_of_the_wrong_kind_or_width_is_refused(rom, change, match):
    layer, packed = scheme_layer("dense", ArrayConfig(2, 2))
    packed.roms[rom] = change(packed.roms[rom])
    with pytest.raises(SparsynError, match=match) as err:
        plan_layer(layer, packed)
    assert "re-run 'sparsyn compress'" in str(err.value)


def test_registry_typo_fails_loudly_naming_the_module(monkeypatch):
    import sparsyn.sw.schemes as schemes
    monkeypatch.setitem(schemes.REGISTRY, "ternery", "ternery:TernaryScheme")
    monkeypatch.setattr(schemes, "_LOADED", {})
    with pytest.raises(SparsynError, match=r"module sparsyn\.sw\.schemes\.ternery does not exist"):
        schemes.scheme_names()
    monkeypatch.setitem(schemes.REGISTRY, "ternery", "ternary:TernaryScheme")
    with pytest.raises(SparsynError, match="registered as 'ternery'"):
        schemes.get_scheme("ternery")


def test_missing_hardware_module_fails_loudly(monkeypatch):
    from sparsyn.hw.schemes.base import scheme_hardware
    from sparsyn.sw.schemes.dense import DenseScheme
    monkeypatch.setattr(DenseScheme, "hardware", "sparsyn.hw.schemes.densse")
    with pytest.raises(SparsynError, match=r"hardware module sparsyn\.hw\.schemes\.densse, which does not exist"):
        scheme_hardware("dense")


def test_every_registered_scheme_has_hardware_and_an_engine():
    from sparsyn.hw.engines import engine_class
    for name in REGISTRY:
        layer, packed = scheme_layer(name, ArrayConfig(2, 4))
        plan = plan_layer(layer, packed)
        assert plan.engine is engine_class(packed)
        assert plan.cycles(None) == plan.model["total"] > 0
        Fragment.get(build_engine(plan), None)


def test_cycle_check_has_no_tolerance():
    from sparsyn.sim.check import CycleMismatch, check_cycles
    layer, packed = scheme_layer("dense", ArrayConfig(2, 2))
    plan = plan_layer(layer, packed)
    total = plan.model["total"]
    assert check_cycles(layer.name, [total], [np.zeros(75)], plan) == [total]
    with pytest.raises(CycleMismatch, match=r"image 0 took \d+ cycles in RTL but the cycle model says \d+ \(\+1\)"):
        check_cycles(layer.name, [total + 1], [np.zeros(75)], plan)


# ---- layering -------------------------------------------------------------------------------------------

def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = ["sparsyn", *path.relative_to(ROOT).parent.parts]
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                mods.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                mods.add(node.module)
    return mods


def _is_app(path: Path) -> bool:
    name = path.stem
    return name == "cli" or name.startswith("cmd_") or name.startswith("bench")


@pytest.mark.parametrize("area,forbidden", [("sw", ("sparsyn.hw", "sparsyn.sim", "sparsyn.boards")),
                                            ("hw", ("sparsyn.sim", "sparsyn.boards"))])
def test_layering(area, forbidden):
    """Library code imports only downwards (anywhere in the file, not only at the top)."""
    bad = []
    for path in sorted((ROOT / area).rglob("*.py")):
        if area == "sw" and _is_app(path):
            continue          # the CLI and the benchmarks sit on top of everything
        for mod in _imports(path):
            if mod.startswith(forbidden) or mod.split(".")[0] in ("hw", "sw", "sim", "boards"):
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not bad, bad


def test_no_private_amaranth_silencing():
    hits = [str(p.relative_to(ROOT)) for area in ("hw", "sw", "sim", "boards", "tests")
            for p in (ROOT / area).rglob("*.py") if "_MustUse__" in p.read_text() and p.name != "test_spine.py"]
    assert not hits, hits
