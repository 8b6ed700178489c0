# Tasks for developing pug-sdk. `just --list` shows them.
# Every recipe runs inside .venv, which `just setup` (or the README's test command) makes;
# `just test` runs nox from it, which makes a virtualenv per session under .nox/.

python := ".venv/bin/python"

# Create .venv and install the SDK editable with every extra.
setup:
    test -x {{python}} || python3 -m venv .venv
    {{python}} -m pip install -q -e ".[dev]"

# Regenerate generated/pug from catalog/ (protos, events, the events reference).
generate:
    {{python}} -m pug_codegen sdk

# Fail with a readable diff if generated/pug is not what the generator makes now.
check-generated:
    {{python}} -m pug_codegen sdk --check

# Lint and type-check the hand-written code, and type-check the generated modules
# (the installed package is not followed into: they are checked from source here).
lint:
    {{python}} -m ruff check .
    {{python}} -m ruff format --check .
    {{python}} -m mypy runtime/pug codegen/pug_codegen examples
    MYPYPATH=runtime:generated {{python}} -m mypy -p pug.events -p pug.resources -p pug.wire_tags -p pug.rules

# The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link or
# reference fails. `python -m http.server -d site` serves it.
docs:
    NO_MKDOCS_2_WARNING=1 {{python}} -m mkdocs build --strict --quiet

# Everything CI runs, through nox (noxfile.py), one session after another: lint, types and
# generated drift once, then the suite on CPython 3.11, 3.12 and 3.13 and at the dependency
# floors; a missing interpreter fails the run. One session: `just test -s tests-3.12 -- -k stream`.
test *args:
    {{python}} -m nox {{args}}

# The suite in .venv only (quicker than `test`; pytest arguments pass through).
pytest *args:
    {{python}} -m pytest {{args}}

# The main job: build a batch with the generated stubs and print it decoded.
demo:
    {{python}} examples/demo.py

# Benchmarks (not tests): they print figures and write bench/results/.
bench:
    {{python}} -m pip install -q -e ".[bench]"
    {{python}} bench/bench_events.py
    {{python}} bench/bench_track.py
    {{python}} bench/bench_delivery.py
    {{python}} bench/bench_compare.py
    {{python}} bench/bench_gzip.py
    {{python}} bench/bench_http.py
    {{python}} bench/bench_lifecycle.py

# Instructions per track() call and per delivered event, for git revisions (needs valgrind).
bench-instructions *revs:
    {{python}} bench/instructions.py {{revs}}
