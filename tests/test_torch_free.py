"""The torch-free parts of gptrl import and work with torch made unimportable."""

import subprocess
import sys
import textwrap

from conftest import FIXTURES


def _run_without_torch(code: str) -> subprocess.CompletedProcess:
    prelude = "import sys\nsys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True)


def test_bundle_io_cli_and_evaluation_need_no_torch():
    result = _run_without_torch(f"""
        import gptrl, gptrl.bundle, gptrl.rollout, gptrl.evaluation, gptrl.cli, gptrl.bundle.hub, gptrl.bundle.writer
        b = gptrl.load_bundle({str(FIXTURES / 'llama-hopper-v1-single' / 'bundle')!r})
        assert b.config.model.network == "llama"
        assert gptrl.cli.main(["inspect", {str(FIXTURES / 'gpt2-hopper-single' / 'bundle')!r}]) == 0
        try:
            gptrl.load_runner
        except ImportError:
            print("torch side refused as expected")
    """)
    assert result.returncode == 0, result.stderr
    assert "torch side refused as expected" in result.stdout
