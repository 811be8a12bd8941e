"""The bad-input catalogue: what a new user gets wrong, each a test — one line on stderr naming the problem and
the fix, a non-zero exit, nothing written. (Output-folder cases: ``test_sw_outdir.py``; option and model-file
basics: ``test_sw_cli.py``; manifest edits: ``test_sw_manifest.py``; board basics: ``test_boards_cli.py``.)

Runs the CLI in-process (``sparsyn.sw.cli.main``) so that the ~40 cases take seconds."""
import sys
import textwrap

import pytest
import torch
from torch import nn

from sparsyn.sw.cli import main

MODELS = textwrap.dedent('''
    import torch
    from torch import nn

    def digits_head(*body, flat=4 * 8 * 8):
        return nn.Sequential(*body, nn.Flatten(), nn.Linear(flat, 10))

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 10)

        def forward(self, x):
            y = self.conv(x)
            return self.fc(torch.flatten(torch.relu(y) + self.conv2(y), 1))

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x, y):
            return self.fc(torch.flatten(x + y, 1))

    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(8, 16, batch_first=True)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            out, _ = self.lstm(x.reshape(-1, 8, 8))
            return self.fc(out[:, -1])

    class Gone(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(torch.flatten(x, 1))
''')


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Model files of every unsupported kind (classes in a module on sys.path, as a user's would be)."""
    root = tmp_path_factory.mktemp("zoo")
    (root / "user_models.py").write_text(MODELS)
    (root / "vanished_models.py").write_text(MODELS)
    sys.path.insert(0, str(root))
    import user_models as um
    import vanished_models as vm
    c = lambda: nn.Conv2d(1, 4, 3, padding=1)   # noqa: E731
    models = {
        "sigmoid": um.digits_head(c(), nn.Sigmoid()),
        "avgpool": um.digits_head(c(), nn.AvgPool2d(2, padding=1), flat=4 * 5 * 5),
        "adaptive_avgpool": um.digits_head(c(), nn.AdaptiveAvgPool2d(3), flat=4 * 3 * 3),
        "grouped_wide": um.digits_head(c(), nn.Conv2d(4, 8, 3, padding=1, groups=2), flat=8 * 8 * 8),
        "grouped": um.digits_head(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=2)),
        "dilated": um.digits_head(nn.Conv2d(1, 4, 3, padding=2, dilation=2)),
        "reflect_padding": um.digits_head(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect")),
        "residual_add": um.Residual(),
        "two_inputs": um.TwoInputs(),
        "lstm": um.Recurrent(),
        "many_problems": um.digits_head(c(), nn.Sigmoid(), nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Tanh()),
        "wrong_classes": nn.Sequential(nn.Flatten(), nn.Linear(64, 7)),
        "no_compute_layer": nn.Sequential(nn.Flatten()),
    }
    paths = {}
    for name, model in models.items():
        torch.save(model, root / f"{name}.pt")
        paths[name] = root / f"{name}.pt"
    torch.save(vm.Gone(), root / "missing_module.pt")
    (root / "vanished_models.py").unlink()
    sys.modules.pop("vanished_models", None)
    paths["missing_module"] = root / "missing_module.pt"
    (root / "empty.pt").write_bytes(b"")
    paths["empty"] = root / "empty.pt"
    torch.save([1, 2, 3], root / "list.pt")
    paths["not_a_module"] = root / "list.pt"
    torch.save(nn.Linear(64, 10).state_dict(), root / "sd.pt")
    paths["state_dict"] = root / "sd.pt"
    paths["folder"] = root
    yield paths
    sys.path.remove(str(root))


CASES = {
    # model files
    "empty": ("model", "could not be loaded"),
    "not_a_module": ("model", "holds a list, not a torch.nn.Module"),
    "state_dict": ("model", "holds a state_dict, not a module"),
    "missing_module": ("model", "needs the Python module 'vanished_models' to load"),
    "folder": ("model", "is a folder; pass the file saved with torch.save"),
    # unsupported layers / structures
    "sigmoid": ("model", "unsupported layer '1' (Sigmoid)"),
    "avgpool": ("model", "AvgPool2d with padding, ceil_mode or divisor_override; use AvgPool2d(kernel_size, stride) "
                         "without padding"),
    "adaptive_avgpool": ("model", "AdaptiveAvgPool2d(3) over a 8x8 map has windows of different sizes"),
    "grouped_wide": ("model", "grouped Conv2d (groups=2)"),       # depthwise (groups=4 of 4) is supported
    "grouped": ("model", "grouped Conv2d (groups=2)"),
    "dilated": ("model", "dilated Conv2d"),
    "reflect_padding": ("model", "padding (1, 1)/reflect; use integer zero padding"),
    "residual_add": ("model", "'relu': it changes the output of 'conv', which 'conv2' also reads (a fused BatchNorm / "
                              "ReLU must be the only reader of its layer's output)"),
    "two_inputs": ("model", "second model input"),
    "lstm": ("model", "LSTM"),
    "many_problems": ("model", "has 3 problems: unsupported layer '1' (Sigmoid) | unsupported layer '2': grouped Conv2d (groups=2) | "
                              "unsupported layer '3' (Tanh)"),
    "wrong_classes": ("model", "produces 7 outputs but the dataset has 10 classes"),
    "no_compute_layer": ("model", "has no Conv2d or Linear layer"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_model_catalogue(zoo, tmp_path, capsys, case):
    _, needle = CASES[case]
    out = tmp_path / "out"
    code = main(["compress", "--model", str(zoo[case]), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("sparsyn: error:"), err
    assert needle in err, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


OPTION_CASES = [
    (["--scheme", "permdiag", "--opt", "p=abc"], "is not a valid int"),
    (["--scheme", "permdiag", "--opt", "pad=maybe"], "is not a valid bool (0/1)"),
    (["--scheme", "tight", "--opt", "density=2"], "density"),
    (["--scheme", "pattern", "--opt", "n=0"], "must be in 1..8"),
    (["--scheme", "pattern", "--opt", "patterns=999"], "patterns=999 must be in"),
    (["--scheme", "ternary", "--opt", "sparsity=1.5"], "sparsity"),
    (["--scheme", "packcnn", "--opt", "alpha=0"], "alpha"),
    (["--array", "1000x1000"], "array 1000x1000 needs 1000000 PEs"),
    (["--array", "300x2"], "sides up to 256"),
]


@pytest.mark.parametrize("args,needle", OPTION_CASES, ids=[" ".join(a) for a, _ in OPTION_CASES])
def test_option_catalogue(tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    code = main(["compress", *args, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()


def test_missing_simulator(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))          # no iverilog / vvp anywhere
    code = main(["sim", "--manifest", str(tmp_path / "m"), "--simulator", "icarus"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Icarus Verilog not installed" in err, err


def test_missing_toolchain_binary(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("YOSYS", str(tmp_path / "no-such-yosys"))
    out = tmp_path / "b"
    code = main(["build", "--board", "icebreaker", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "YOSYS=" in err and "does not name an executable" in err, err
    assert not out.exists()


def test_model_too_large_for_the_board(tmp_path, capsys):
    """A 16x16 array on the iCEBreaker: refused by the fit check (need vs have) before any tool runs."""
    man, out = tmp_path / "m", tmp_path / "b"
    assert main(["compress", "--array", "16x16", "--out", str(man), "--quiet"]) == 0
    capsys.readouterr()
    code = main(["build", "--board", "icebreaker", "--manifest", str(man), "--layer", "all", "--out", str(out),
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "does not fit" in err, err
    assert not out.exists()
