# Coverage-guided fuzzing (docs/fuzzing.md). Every target runs FUZZ_SECONDS (DPI dissectors: FUZZ_DPI_SECONDS)
# under atheris with the instrumented, bounds-checked build in fuzz/build/; findings land in fuzz/findings/.
#   make fuzz-deps                        install what fuzzing needs: clang (apt) and atheris (pip, into .venv)
#   make fuzz-build                       build the instrumented extensions (clang, ASan, libFuzzer coverage)
#   make fuzz-seeds                       seed corpora from the nDPI captures
#   make fuzz FUZZ_SECONDS=60             every target, one after the other
#   make fuzz FUZZ_ONLY='dpi-tcp-*'       a subset (glob over `python fuzz/fuzz.py --list`)
PYTHON ?= .venv/bin/python
FUZZ_SECONDS ?= 60
FUZZ_DPI_SECONDS ?= $(FUZZ_SECONDS)
FUZZ_ONLY ?= *

.PHONY: fuzz fuzz-deps fuzz-build fuzz-seeds fuzz-clean

fuzz-deps:
	command -v clang >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang
	$(PYTHON) -c 'import atheris' 2>/dev/null || $(PYTHON) -m pip install -q atheris

fuzz: fuzz/build/sizeof_ft_reader fuzz/corpus/seeds
	$(PYTHON) fuzz/run.py --seconds $(FUZZ_SECONDS) --dpi-seconds $(FUZZ_DPI_SECONDS) --only '$(FUZZ_ONLY)'

fuzz-build:
	$(PYTHON) fuzz/build.py

fuzz/build/sizeof_ft_reader:
	$(PYTHON) fuzz/build.py

fuzz-seeds fuzz/corpus/seeds:
	$(PYTHON) fuzz/seeds.py

fuzz-clean:
	rm -rf fuzz/build fuzz/corpus/work
