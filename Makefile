# Quick start on Debian (as root or with sudo):  make demo   |   tests:  make test
.PHONY: setup demo test

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/loopline demo

test: setup
	.venv/bin/pytest -q
