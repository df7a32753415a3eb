"""The project is an installed package: importable from any folder, with its Hydra plugin."""

import subprocess
import sys


def test_the_package_imports_from_another_folder(tmp_path):
    code = ("from instability.measures import LinearCKADistance; import hydra_plugins.instability_sweeper; "
            "import instability, pathlib; print(pathlib.Path(instability.__file__).parent.parent)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
