"""One fuzz target under atheris (libFuzzer) with the instrumented, bounds-checked build of fuzz/build.py.

    python fuzz/fuzz.py TARGET [libFuzzer options] [corpus dirs]

TARGET: parser, reader, e2e, or dpi-<tcp|udp>-<dissector> (fuzz/targets.py lists them: `--list`).
Run it through fuzz/run.py, which preloads atheris's asan_with_fuzzer.so and sets the corpus, the time
budget and the artifact directory; run by hand it needs

    LD_PRELOAD=$(python -c 'import atheris; print(atheris.path())')/asan_with_fuzzer.so \\
    ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 python fuzz/fuzz.py parser -max_total_time=60
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILT = ROOT / "fuzz" / "build" / "tree" / "dpi"


def use_instrumented_build() -> None:
    """dpi's Python modules come from the worktree, its extensions from fuzz/build/tree/dpi."""
    if not any(BUILT.glob("_reader*.so")):
        sys.exit(f"no instrumented build in {BUILT}: run `make fuzz-build` (python fuzz/build.py)")
    sys.path.insert(0, str(ROOT))
    import dpi
    dpi.__path__.insert(0, str(BUILT))
    import dpi._reader
    import dpi._flowtable
    for mod in (dpi._reader, dpi._flowtable):
        if not mod.__file__.startswith(str(BUILT)):
            sys.exit(f"{mod.__name__} loaded from {mod.__file__}, not from the fuzz build")


def main() -> None:
    use_instrumented_build()
    sys.path.insert(0, str(ROOT / "fuzz"))
    import targets
    if len(sys.argv) > 1 and sys.argv[1] == "--list":
        print("\n".join(targets.all_targets()))
        return
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    name = sys.argv.pop(1)
    fn = targets.target(name)
    expected = ()
    if name == "e2e":
        from dpi.capture import CaptureError
        expected = (CaptureError,)  # a malformed capture is reported, by design

    def one_input(data: bytes) -> None:
        try:
            fn(data)
        except expected:
            pass

    import atheris
    if "asan_with_fuzzer" not in os.environ.get("LD_PRELOAD", ""):
        print("warning: asan_with_fuzzer.so not preloaded: no native coverage or AddressSanitizer",
              file=sys.stderr)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
