"""``geta deploy``: an artifact of a finished run as ONNX (run by onnxruntime) or on torch's
integer kernels, with the per-layer report."""

import onnx

from tests.cli.conftest import run_cli


def test_deploy_writes_onnx_with_integer_weights(finished, tmp_path):
    out = tmp_path / "lenet5.onnx"
    status, stdout, err = run_cli("deploy", str(finished.out / "artifact"), "--out", str(out))
    assert status == 0, err
    assert f"wrote {out}" in stdout and "weights in RAM" in stdout
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "MatMulNBits" in ops and "DequantizeLinear" in ops
    # every quantized layer of the artifact has a row
    for layer in ("0", "3", "7", "9", "11"):  # lenet5: a Sequential
        assert any(line.startswith(layer + " ") for line in stdout.splitlines())


def test_deploy_on_torch_kernels(finished):
    status, stdout, err = run_cli(
        "deploy", str(finished.out / "artifact"), "--backend", "torch", "--activations", "int8"
    )
    assert status == 0, err
    assert "int8-dynamic" in stdout


def test_deploy_needs_an_artifact(tmp_path):
    status, _, err = run_cli("deploy", str(tmp_path), "--model", "lenet5")
    assert status == 1 and "manifest.json is missing" in err
