"""The sequenced engine's per-layer descriptor table: a ROM file of the manifest, word for word the memory the
chip reads its per-layer values from; a table that does not belong to the design is refused in one line."""
import json
import shutil

import numpy as np
import pytest
from amaranth.hdl import Fragment

from sparsyn.hw.descriptor import DescriptorTable, load_table, manifest_descriptor
from sparsyn.hw.sequenced_engine import SequencedEngine, plan_sequenced
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.testing import one_line_error as one_line, run_cli as sparsyn
from sparsyn.sw.manifest import load_descriptor, load_manifest, reseal
from sparsyn.sw.rom import read_readmemh, write_readmemh
from sparsyn.sw.schedule import ArrayConfig




@pytest.fixture
def manifest(dense_manifest):
    """The digits model compressed dense for 2x2 by the CLI (shared; tests that edit it work on a copy)."""
    return dense_manifest


def test_the_manifest_carries_the_table_the_chip_reads(manifest):
    """descriptor.hex is in the sealed manifest, counted in the stored bits, and is word for word the memory the
    sequenced engine builds (every field of it read by some part of the design)."""
    doc = json.loads((manifest / "manifest.json").read_text())
    rec = doc["descriptor"]
    words = read_readmemh(manifest / rec["file"], rec["width"], rec["depth"])
    assert rec["steps"] == ["conv1", "conv2", "fc"] and rec["kind"] == "table"
    report = json.loads((manifest / "report.json").read_text())
    assert report["descriptor_bits"] == rec["width"] * rec["depth"] > 0
    assert report["stored_bits"] == sum(i["width"] * i["depth"] for l in doc["layers"] for i in l.get("roms", {}).values()) \
        + report["descriptor_bits"]
    model, packed, doc = load_manifest(manifest)
    table = load_table(manifest, doc)
    plan = plan_sequenced(model, packed, ArrayConfig(2, 2), descriptor=table)
    assert plan.descriptor is table and plan.rom_bits == sum(p.rom_bits for p in packed.values()) + table.bits
    engine = SequencedEngine(plan)
    Fragment.get(engine, None)
    assert list(engine.descriptor_rom.init) == words == table.words
    # per-layer values the design reads from it, e.g. the output buffer's element count and the requant's ReLU
    assert table.values("OutputBuffer.elements") == [512, 256, 10]
    assert table.values("RequantSequencer.relu") == [1, 1, 0]


def test_the_engine_computes_from_the_table(manifest, monkeypatch):
    """The per-layer values come from the memory: a table whose last layer says "ReLU" (the check bypassed) makes
    the RTL clamp the negative logits, while the golden model does not."""
    from sparsyn.hw import descriptor as desc
    from sparsyn.hw.amaranth_sim import simulate_engine
    from sparsyn.sw.data import digits
    from sparsyn.sw.golden import quantize_input, run_golden
    model, packed, doc = load_manifest(manifest)
    plan = plan_sequenced(model, packed, ArrayConfig(2, 2), descriptor=load_table(manifest, doc))
    x = quantize_input(digits().test_x[:1], model.input_scale)
    gold = run_golden(model, x)[-1].numpy().ravel()
    assert (gold < 0).any()
    outs, _ = simulate_engine(SequencedEngine(plan), [x[0].numpy().ravel()])
    assert np.array_equal(outs[0].ravel(), gold)
    f = plan.descriptor.field("RequantSequencer.relu")
    edited = list(plan.descriptor.words)
    edited[2] |= f.encode(1)
    real = desc.descriptor_memory
    monkeypatch.setattr(desc, "descriptor_memory",
                        lambda table: real(DescriptorTable(table.steps, table.fields, edited)))
    import sparsyn.hw.sequenced_engine as seq
    monkeypatch.setattr(seq, "descriptor_memory", desc.descriptor_memory)
    outs, _ = simulate_engine(SequencedEngine(plan), [x[0].numpy().ravel()])
    assert np.array_equal(outs[0].ravel(), np.maximum(gold, 0))


def infer(manifest):
    return sparsyn("infer", "--board", "icebreaker", "--manifest", str(manifest), "--port", "sim", "--images", "1")


def _edited(manifest, tmp_path, change):
    out = tmp_path / "m"
    shutil.copytree(manifest, out)
    doc = json.loads((out / "manifest.json").read_text())
    change(out, doc)
    (out / "manifest.json").write_text(json.dumps(doc))
    reseal(out)
    return out


def test_a_table_of_another_design_is_refused(manifest, tmp_path):
    """A field value changed (resealed, so only the design check can see it), a table missing and a file
    modified without resealing: each build / infer refusal is one line naming the problem and the fix."""
    def bump(out, doc):
        rec = doc["descriptor"]
        table = DescriptorTable.from_rom(*load_descriptor(manifest))
        f = table.field("OutputBuffer.elements")
        words = list(table.words)
        words[2] = (words[2] & ~(((1 << f.width) - 1) << f.offset)) | f.encode(11)
        write_readmemh(out / rec["file"], words, rec["width"])
    line = one_line(infer(_edited(manifest, tmp_path / "a", bump)))
    assert "descriptor table does not belong to this design: field OutputBuffer.elements of layer fc is 11, " \
           "the design needs 10; re-run 'sparsyn compress'" in line

    def drop(out, doc):
        (out / doc.pop("descriptor")["file"]).unlink()
    line = one_line(infer(_edited(manifest, tmp_path / "b", drop)))
    assert "has no descriptor table" in line and "re-run 'sparsyn compress'" in line

    out = tmp_path / "c"
    shutil.copytree(manifest, out)
    (out / "descriptor.hex").write_text((out / "descriptor.hex").read_text().replace("0", "1", 1))
    line = one_line(infer(out))
    assert "checksum mismatch for ROM file" in line and "descriptor.hex" in line


def test_no_table_for_a_model_the_shared_datapath_cannot_run(compressed_digits, quick_opts):
    """A model whose layers cannot share one datapath has no table (a board builds the per-layer engine)."""
    model, packed = compressed_digits("pattern", ArrayConfig(2, 2), **quick_opts["pattern"])
    _, dense = compressed_digits("dense", ArrayConfig(2, 2))
    assert manifest_descriptor(model, packed, ArrayConfig(2, 2)) is not None
    assert manifest_descriptor(model, dict(packed, conv1=dense["conv1"]), ArrayConfig(2, 2)) is None
    with pytest.raises(SparsynError, match="descriptor table does not belong"):
        table = manifest_descriptor(model, packed, ArrayConfig(2, 2))
        plan_sequenced(model, packed, ArrayConfig(2, 2),
                       descriptor=DescriptorTable(table.steps[::-1], table.fields, table.words))
