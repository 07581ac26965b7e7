"""The README's first commands work for someone on a machine without a GPU."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_cpu_only_torch_line_comes_before_the_first_install():
    """`pip install .` alone pulls PyTorch's CUDA build (about 3 GB of downloads) on a CPU machine:
    the CPU build's exact line must come first, in the first block of commands."""
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1)
    lines = [line.split("#")[0].strip() for line in first_block.splitlines()]
    cpu = next(i for i, line in enumerate(lines) if line.startswith("pip install torch"))
    assert "--index-url https://download.pytorch.org/whl/cpu" in lines[cpu]
    install = next(i for i, line in enumerate(lines) if line.startswith("pip install ."))
    assert cpu < install
