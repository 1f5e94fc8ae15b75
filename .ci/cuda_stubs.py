#!/usr/bin/env python3
"""Writes link stubs for the CUDA libraries a `--features cuda` build links against.

candle-core turns on cudarc's `dynamic-linking`, so the binary names libcuda, libnvrtc,
libcurand, libcublas and libcublasLt (and libcudart, which the toolkit's wheel has: nvcc's
host code calls its internals). libcuda belongs to the NVIDIA driver and is on no package
registry; the others are hundreds of MB of wheels that only a GPU needs. NVIDIA's
toolkits ship stubs for exactly this (lib64/stubs); its PyPI wheels do not. So each library
gets a stub with the real SONAME (what the binary will ask the dynamic loader for) and one
function per entry point that cudarc declares, each returning 34: CUDA_ERROR_STUB_LIBRARY, the
code NVIDIA's own stubs return. A binary linked against them starts where the stubs are on
LD_LIBRARY_PATH and reports that no GPU is usable; on a GPU node the driver's and the
image's real libraries are found instead.

    .ci/cuda_stubs.py CUDARC_SRC OUT_DIR
"""

import re
import subprocess
import sys
from pathlib import Path

# cudarc's module -> (link name, SONAME of the CUDA 13 library).
LIBRARIES = {
    "driver": ("cuda", "libcuda.so.1"),
    "nvrtc": ("nvrtc", "libnvrtc.so.13"),
    "curand": ("curand", "libcurand.so.10"),
    "cublas": ("cublas", "libcublas.so.13"),
    "cublaslt": ("cublasLt", "libcublasLt.so.13"),
}
ENTRY_POINT = re.compile(r"^\s*pub unsafe fn ([A-Za-z_][A-Za-z0-9_]*)\(", re.MULTILINE)
STUB_LIBRARY_ERROR = 34


def main(cudarc_src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for module, (link_name, soname) in LIBRARIES.items():
        bindings = cudarc_src / "src" / module / "sys" / "mod.rs"
        names = sorted(set(ENTRY_POINT.findall(bindings.read_text())))
        if not names:
            sys.exit(f"{bindings}: no entry points found; cudarc's layout changed")
        source = out / f"{link_name}_stub.c"
        source.write_text(
            "".join(f"int {name}(void) {{ return {STUB_LIBRARY_ERROR}; }}\n" for name in names)
        )
        library = out / soname
        subprocess.run(
            ["cc", "-shared", "-fPIC", "-O0", f"-Wl,-soname,{soname}", "-o", library, source],
            check=True,
        )
        source.unlink()
        # The linker looks for lib<name>.so, the loader for the SONAME.
        (out / f"lib{link_name}.so").unlink(missing_ok=True)
        (out / f"lib{link_name}.so").symlink_to(soname)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
