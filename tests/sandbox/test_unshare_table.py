"""The unshare backend's mount table: paths that need escaping reach libmount intact."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from holdfast.sandbox.unshare_launch import _fstab_field, _launch_script, unshare_available

pytestmark = pytest.mark.sandbox


def test_fields_escape_what_a_mount_table_splits_on() -> None:
    assert _fstab_field("/opt/a b\tc\\d#e\nf") == "/opt/a\\040b\\011c\\134d\\043e\\012f"
    assert _fstab_field("/usr/lib") == "/usr/lib"


@pytest.mark.skipif(not unshare_available(), reason="needs root and util-linux unshare")
def test_an_interpreter_prefix_with_spaces_and_hashes_is_mounted_read_only() -> None:
    prefix = Path(tempfile.mkdtemp(prefix="holdfast prefix #1 ", dir="/var/tmp"))
    try:
        (prefix / "marker").write_text("here\n")
        script = _launch_script(str(prefix), "/mnt", "1m", None, ["cmdline"])
        probe = (
            f'cat "{prefix}/marker"; if ( : > "{prefix}/x" ) 2>/dev/null; then echo writable; fi; '
            "wc -c < /proc/cmdline; ls -a /; if test -e /fstab; then echo table-left; fi"
        )
        done = subprocess.run(
            [
                str(shutil.which("unshare")),
                "--mount",
                "--pid",
                "--fork",
                "--propagation",
                "private",
                "/bin/sh",
                "-c",
                script,
                "holdfast-launch",
                "/bin/sh",
                "-c",
                probe,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.split()
        assert lines[0] == "here"
        assert "writable" not in lines and "table-left" not in lines
        assert lines[1] == "0"  # the masked kernel command line reads empty
        assert {"usr", "proc", "dev", "workspace", "tmp"} <= set(lines)
    finally:
        shutil.rmtree(prefix)
