import subprocess
import sys


def test_import_lcdata_does_not_import_torch():
    code = "import sys, lcdata, lcdata.cli, lcdata.stats.run; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
