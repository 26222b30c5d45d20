#!/usr/bin/env bash
# The quick start: what exists of the pipeline so far.
set -euo pipefail
resnet summary --arch 34 --depth 1
