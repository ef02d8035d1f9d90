"""Every measurement says what produced it: versions, provider, CPU and vector ISA, threads."""

import json
import subprocess
import sys
from pathlib import Path

from gptrl.provenance import cpu_info, differences, git_commit, provenance, summary

ROOT = Path(__file__).parents[1]
HOPPER = ROOT / "bundles" / "hopper-v5"


def test_cpu_info_reads_the_model_and_the_widest_vector_isa(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse4_2 avx avx2 fma\n\n"
                       "processor\t: 1\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse4_2 avx avx2 fma\n")
    info = cpu_info(cpuinfo)
    assert info["model"] == "Some CPU 9000" and info["vector_isa"] == "avx2"
    assert info["isa_flags"] == ["sse4_2", "avx", "avx2", "fma"]
    cpuinfo.write_text("model name\t: Big\nflags\t\t: avx2 avx512f avx512bw\n")
    assert cpu_info(cpuinfo)["vector_isa"] == "avx512f"


def test_eval_json_records_the_runtime_setup_without_importing_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from gptrl.cli import main\n"
            f"raise SystemExit(main(['eval', {str(HOPPER)!r}, '--episodes', '1', '--max-steps', '5', '--json']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)["provenance"]
    assert set(record["packages"]) >= {"numpy", "onnxruntime", "gymnasium", "mujoco"}
    assert "torch" not in record["packages"] and "torch" not in record["threads"]
    assert record["provider"] == "CPUExecutionProvider" and record["threads"]["onnxruntime_intra_op"] == 1
    assert record["cpu"]["model"] and record["cpu"]["logical_cpus"] >= 1
    assert record["commit"] is None or len(record["commit"].split("+")[0]) == 40


def test_the_policy_decides_provider_and_threads_and_torch_is_named_once_imported():
    import torch  # imported by the torch side of the test suite anyway

    from gptrl.runtime import load_policy

    record = provenance(load_policy(HOPPER, intra_op_threads=2))
    assert record["threads"]["onnxruntime_intra_op"] == 2
    assert record["packages"]["torch"] == torch.__version__ and record["threads"]["torch"] == torch.get_num_threads()
    assert provenance(None)["provider"] is None


def test_differences_name_what_would_change_a_closed_loop_number():
    here = provenance(None)
    assert differences(here, here) == []
    other = json.loads(json.dumps(here))
    other["packages"]["numpy"] = "0.0.1"
    other["cpu"]["vector_isa"] = "avx2"
    other["commit"] = "f" * 40  # a different commit alone does not change the numbers
    found = differences(other, here)
    assert len(found) == 2 and "numpy 0.0.1 (card)" in found[0] and "cpu.vector_isa avx2 (card)" in found[1]
    assert differences(None, here) == ["the card records no provenance"]


def test_summary_is_one_line_naming_versions_cpu_and_threads():
    here = provenance(None)
    line = summary({**here, "provider": "CPUExecutionProvider", "threads": {"onnxruntime_intra_op": 1}})
    assert "\n" not in line and f"numpy {here['packages']['numpy']}" in line
    assert "CPUExecutionProvider x1 thread" in line and here["cpu"]["model"] in line
    assert summary(None).startswith("not recorded")


def test_git_commit_is_none_outside_the_gptrl_checkout(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert git_commit(tmp_path / "sub") is None
    (tmp_path / "sub").mkdir()
    assert git_commit(tmp_path / "sub") is None  # a repository, but not gptrl's


def test_a_card_refresh_writes_the_provenance_line_and_replaces_it_next_time(tmp_path, monkeypatch):
    import shutil

    from gptrl.training import model_card

    bundle = shutil.copytree(HOPPER, tmp_path / "hopper-v5")
    card = json.loads((bundle / "eval.json").read_text())
    here = provenance(None)
    monkeypatch.setattr(model_card, "measure", lambda d, num_envs=1: {**card, "provenance": here})
    model_card.refresh("Hopper-v5", bundle)
    text = (bundle / "README.md").read_text()
    assert text.count("Measured on: ") == 1 and f"Measured on: {summary(here)}." in text
    assert json.loads((bundle / "eval.json").read_text())["provenance"] == here
    moved = {**here, "python": "9.9.9"}
    monkeypatch.setattr(model_card, "measure", lambda d, num_envs=1: {**card, "provenance": moved})
    model_card.refresh("Hopper-v5", bundle)
    text = (bundle / "README.md").read_text()
    assert text.count("Measured on: ") == 1 and "Python 9.9.9" in text
